import { describeTextRegistry } from "@clusterplatform/test-kit/registry-contract";

describeTextRegistry("subscripts", "#!ipxe\nset base http://mirror/fedora/os\nkernel ${base}/images/pxeboot/vmlinuz initrd=initrd.img inst.ks=http://127.0.0.1:3000/api/kickstarts/1\ninitrd ${base}/images/pxeboot/initrd.img\nboot");
