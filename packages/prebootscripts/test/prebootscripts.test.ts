import { describeTextRegistry } from "@clusterplatform/test-kit/registry-contract";

describeTextRegistry("prebootscripts", '#!/bin/bash\necho "This could be the preboot script!"\n');
