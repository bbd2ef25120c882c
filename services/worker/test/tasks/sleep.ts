// The built-in `sleep` task, so the tests' task folder has it next to the test-only ones.
export { default } from "../../src/tasks/sleep.js";
