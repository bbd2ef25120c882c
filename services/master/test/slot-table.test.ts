import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { newTaskId, slotOf } from "../src/store/ids.js";
import { SlotTable } from "../src/store/slot-table.js";

interface Item {
  readonly id: string;
  readonly n: number;
}

function filled(count: number, capacity?: number): { table: SlotTable<Item>; items: Item[] } {
  const table = new SlotTable<Item>(capacity);
  const items = Array.from({ length: count }, (_, n) => table.add((id) => ({ id, n })));
  return { table, items };
}

describe("slot table", () => {
  it("finds each record by its id, which names its slot, and nothing by an id it did not give", () => {
    const { table, items } = filled(70);
    assert.deepEqual(
      items.map((item) => slotOf(item.id)),
      items.map((_, slot) => slot),
    );
    for (const item of items) {
      assert.match(item.id, /^[A-Za-z0-9_-]{16}$/);
      assert.equal(table.get(item.id), item);
    }
    const first = items[0] as Item;
    // The same slot with other random bits, a slot past the top, and ids of other shapes.
    const forged = `${first.id.slice(0, 4)}${first.id[4] === "A" ? "B" : "A"}${first.id.slice(5)}`;
    for (const id of [forged, `AAB_${first.id.slice(4)}`, newTaskId(), "", "é".repeat(16), "x"]) {
      assert.equal(table.get(id), undefined, id);
    }
  });

  it("reuses the lowest freed slot first and cuts off an emptied top", () => {
    const { table, items } = filled(6);
    const [a, b, c, d, e, f] = items as [Item, Item, Item, Item, Item, Item];
    table.delete(d);
    table.delete(b);
    const refilled = table.add((id) => ({ id, n: 10 }));
    assert.equal(slotOf(refilled.id), 1);
    // Slots 3, 4 and 5 empty: the top is cut off at 3, and the freed 3 goes with it.
    table.delete(e);
    assert.equal(table.span, 6);
    table.delete(f);
    assert.equal(table.span, 3);
    const added = [11, 12, 13].map((n) => table.add((id) => ({ id, n })));
    assert.deepEqual(
      added.map((item) => slotOf(item.id)),
      [3, 4, 5],
    );
    for (const item of [a, refilled, c, ...added]) assert.equal(table.get(item.id), item);
    for (const item of [b, d, e, f]) assert.equal(table.get(item.id), undefined);
    assert.equal(table.size, 6);
    for (const item of [c, ...added, refilled]) table.delete(item);
    assert.equal(table.span, 1);
    table.delete(a);
    assert.equal(table.span, 0);
  });

  it("holds no more than its capacity", () => {
    const { table, items } = filled(3, 3);
    assert.equal(table.fits(1), false);
    assert.throws(() => table.add((id) => ({ id, n: 3 })), /holds 3 records/);
    table.delete(items[1] as Item);
    assert.equal(table.fits(1), true);
    assert.equal(slotOf(table.add((id) => ({ id, n: 4 })).id), 1);
    assert.throws(() => new SlotTable(2 ** 24 + 1), /capacity/);
  });

  it("keeps every record findable through random adds and deletes, in no more slots than it held at once, its array cut to the highest slot held", () => {
    const table = new SlotTable<Item>();
    const live = new Map<string, Item>();
    const gone: Item[] = [];
    let peak = 0;
    // A fixed generator, so a failure can be replayed.
    let seed = 7;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const highestHeld = () => Math.max(-1, ...[...live.keys()].map(slotOf));
    for (let n = 0; n < 20_000; n++) {
      // Bursts of adds, then of deletes, as a queue fills and drains.
      const adding = Math.floor(n / 2000) % 2 === 0 ? random() < 0.8 : random() < 0.2;
      if (adding || live.size === 0) {
        const item = table.add((id) => ({ id, n }));
        assert.equal(live.has(item.id), false);
        live.set(item.id, item);
        peak = Math.max(peak, live.size);
        assert.ok(slotOf(item.id) < peak, `slot ${slotOf(item.id)} with at most ${peak} held`);
      } else {
        const ids = [...live.keys()];
        const item = live.get(ids[Math.floor(random() * ids.length)] as string) as Item;
        table.delete(item);
        live.delete(item.id);
        gone.push(item);
        if (n % 97 === 0) assert.equal(table.span, highestHeld() + 1, `span after ${n} steps`);
      }
    }
    assert.equal(table.size, live.size);
    assert.equal(table.span, highestHeld() + 1);
    for (const item of live.values()) assert.equal(table.get(item.id), item);
    for (const item of gone) assert.equal(table.get(item.id), undefined);
  });
});
