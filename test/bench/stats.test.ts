import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { median, percentile } from "../../bench/lib/stats.js";

describe("median", () => {
  it("takes the middle value of an odd count, whatever the order", () => {
    assert.equal(median([9, 1, 5]), 5);
  });

  it("averages the two middle values of an even count", () => {
    assert.equal(median([4, 1, 3, 2]), 2.5);
  });

  it("refuses an empty list rather than answering NaN", () => {
    assert.throws(() => median([]), /no values/);
  });
});

describe("percentile (nearest rank)", () => {
  const hundred = Array.from({ length: 100 }, (_, i) => 100 - i);

  it("gives the observed value at the rank, never an interpolation", () => {
    assert.equal(percentile(hundred, 50), 50);
    assert.equal(percentile(hundred, 99), 99);
    assert.equal(percentile([1, 2, 3, 4], 50), 2);
  });

  it("reports the maximum as p100 and the minimum as p0", () => {
    assert.equal(percentile(hundred, 100), 100);
    assert.equal(percentile(hundred, 0), 1);
  });

  it("rounds the rank up: p11 of ten samples is the second-smallest", () => {
    assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 11), 2);
  });

  it("puts p99 of 200 samples on the second-largest", () => {
    const samples = Array.from({ length: 200 }, (_, i) => i + 1);
    assert.equal(percentile(samples, 99), 198);
  });

  it("refuses a p outside 0–100", () => {
    assert.throws(() => percentile([1], 101), /from 0 to 100/);
  });
});
