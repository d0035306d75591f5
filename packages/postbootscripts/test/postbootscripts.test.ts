import { describeTextRegistry } from "@clusterplatform/test-kit/registry-contract";

describeTextRegistry(
	"postbootscripts",
	'#!/bin/bash\nip=$(hostname -I | cut -d " " -f 1)\ncurl --request POST "http://127.0.0.1:3000/api/localnodes?ip=${ip}&artifactId=site.a&pingable=true"\n',
);
