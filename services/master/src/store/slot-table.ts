import { newSlottedId, SLOTS_MAX, slotOf } from "./ids.js";
import { MinHeap } from "./queues.js";

/**
 * Records by id, where each id names the slot its record sits in (`newSlottedId`): a lookup is an
 * array index and a comparison, and the table costs 8 to 16 bytes a record where a `Map` keyed by
 * random ids costs 28 to 56. Freed slots are reused lowest first, so that as records come and go
 * they gather at the bottom and a top emptied after a burst is cut off.
 */
export class SlotTable<T extends { readonly id: string }> {
  private readonly slots: (T | undefined)[] = [];
  /**
   * Freed slots, lowest first. Those at or above `slots.length` went with a top that was cut off:
   * once the lowest is one of them, all are, and they are dropped together.
   */
  private readonly free = new MinHeap<number>((slot) => slot);
  private count = 0;

  constructor(
    /** Records the table holds at most. */
    readonly capacity = SLOTS_MAX,
  ) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > SLOTS_MAX) {
      throw new RangeError(`capacity must be an integer from 1 to ${SLOTS_MAX}, not ${capacity}`);
    }
  }

  get size(): number {
    return this.count;
  }

  /** Slots up to the highest one held, empty ones among them: what the table's array keeps. */
  get span(): number {
    return this.slots.length;
  }

  /** Whether `more` records fit besides those held. */
  fits(more: number): boolean {
    return this.count + more <= this.capacity;
  }

  /** Holds the record `create` makes with the id it is given: the caller checks `fits` first. */
  add(create: (id: string) => T): T {
    if (!this.fits(1)) throw new RangeError(`the table holds ${this.capacity} records, its most`);
    this.dropStaleFree();
    const slot = this.free.pop() ?? this.slots.length;
    const record = create(newSlottedId(slot));
    this.slots[slot] = record;
    this.count++;
    return record;
  }

  get(id: string): T | undefined {
    const slot = slotOf(id);
    const record = slot < 0 ? undefined : this.slots[slot];
    return record !== undefined && record.id === id ? record : undefined;
  }

  /** Forgets `record`, if the table holds it. */
  delete(record: T): void {
    const slot = slotOf(record.id);
    if (slot < 0 || this.slots[slot] !== record) return;
    this.slots[slot] = undefined;
    this.count--;
    if (slot < this.slots.length - 1) {
      this.free.push(slot);
      return;
    }
    let top = slot;
    while (top > 0 && this.slots[top - 1] === undefined) top--;
    this.slots.length = top;
    this.dropStaleFree();
  }

  private dropStaleFree(): void {
    if ((this.free.peek() ?? -1) >= this.slots.length) this.free.clear();
  }
}
