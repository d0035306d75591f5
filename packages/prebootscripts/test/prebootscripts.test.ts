import { describeTextRegistry } from "../../../test/support/registry-contract";

describeTextRegistry("prebootscripts", '#!/bin/bash\necho "This could be the preboot script!"\n');
