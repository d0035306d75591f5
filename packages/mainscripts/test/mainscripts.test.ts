import { describeTextRegistry } from "@clusterplatform/test-kit/registry-contract";

describeTextRegistry("mainscripts", "#!ipxe\nmenu Choose Script\nitem sub Fedora\nchoose --default sub --timeout 3000 server && goto ${server}\n:sub\nchain http://127.0.0.1:3000/api/subscripts/1", "full");
