// Prints the boot matrix the boot suites recorded, then the plain closing line CI readers look
// for: "jest: N passed, N failed, N skipped".
const { bootMatrixTable } = require("./boot-matrix-table");

class SummaryReporter {
	onRunComplete(_contexts, results) {
		const matrix = bootMatrixTable();
		if (matrix) process.stdout.write(`\nboot matrix (test-artifacts/boot-matrix.md):\n${matrix}`);
		const skipped = results.numPendingTests + results.numTodoTests;
		const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
		process.stdout.write(`\njest: ${results.numPassedTests} passed, ${failed} failed, ${skipped} skipped\n`);
	}
}
module.exports = SummaryReporter;
