// The built-in `fail` task, so the tests' task folder has it next to the test-only ones.
export { default } from "../../src/tasks/fail.js";
