/**
 * A double-ended queue on a ring buffer: O(1) at both ends, where `Array.prototype.shift` on a
 * queue of 100,000 tasks copies the whole array every time. The buffer shrinks again after a
 * burst so an emptied queue does not keep its peak size.
 */
export class Deque<T> {
  // A power of two, so that `& (length - 1)` wraps an index around the ring.
  private static readonly minCapacity = 16;
  private buffer: (T | undefined)[] = new Array(Deque.minCapacity);
  private head = 0;
  private size = 0;

  get length(): number {
    return this.size;
  }

  push(item: T): void {
    if (this.size === this.buffer.length) this.resize(this.buffer.length * 2);
    this.buffer[(this.head + this.size) & (this.buffer.length - 1)] = item;
    this.size++;
  }

  unshift(item: T): void {
    if (this.size === this.buffer.length) this.resize(this.buffer.length * 2);
    this.head = (this.head - 1) & (this.buffer.length - 1);
    this.buffer[this.head] = item;
    this.size++;
  }

  shift(): T | undefined {
    if (this.size === 0) return undefined;
    const item = this.buffer[this.head];
    this.buffer[this.head] = undefined;
    this.head = (this.head + 1) & (this.buffer.length - 1);
    this.size--;
    if (this.buffer.length > Deque.minCapacity && this.size <= this.buffer.length >>> 2) {
      this.resize(this.buffer.length >>> 1);
    }
    return item;
  }

  peek(): T | undefined {
    return this.size === 0 ? undefined : this.buffer[this.head];
  }

  private resize(capacity: number): void {
    const next: (T | undefined)[] = new Array(capacity);
    const mask = this.buffer.length - 1;
    for (let i = 0; i < this.size; i++) next[i] = this.buffer[(this.head + i) & mask];
    this.buffer = next;
    this.head = 0;
  }
}

/**
 * A binary min-heap ordered by a numeric key (here: when a delayed task may run again, and the
 * slot table's free slots).
 */
export class MinHeap<T> {
  private readonly items: T[] = [];

  constructor(private readonly key: (item: T) => number) {}

  get length(): number {
    return this.items.length;
  }

  push(item: T): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    const k = this.key(item);
    while (i > 0) {
      const parent = (i - 1) >>> 1;
      if (this.key(items[parent] as T) <= k) break;
      items[i] = items[parent] as T;
      i = parent;
    }
    items[i] = item;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  clear(): void {
    this.items.length = 0;
  }

  pop(): T | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    const k = this.key(last);
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child =
        right < items.length && this.key(items[right] as T) < this.key(items[left] as T)
          ? right
          : left;
      if (this.key(items[child] as T) >= k) break;
      items[i] = items[child] as T;
      i = child;
    }
    items[i] = last;
    return top;
  }
}
