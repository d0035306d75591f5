import { describeTextRegistry } from "@clusterplatform/test-kit/registry-contract";

describeTextRegistry("kickstarts", "#version=DEVEL\nkeyboard us\nrootpw --plaintext asdfasdf123$$44\n%pre\ncurl http://127.0.0.1:3000/api/prebootscripts/1 | bash\n%end\n");
