import { MemoryTaskStore } from "../src/store/memory-store.js";
import { storeContract } from "./store-contract.js";

storeContract("memory store", async (t, options) => {
  const store = new MemoryTaskStore(options);
  t.after(() => store.close());
  return {
    store,
    sweep: async () => store.sweep(),
  };
});
