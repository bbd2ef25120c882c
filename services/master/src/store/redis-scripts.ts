/**
 * The Lua scripts of the Redis store (redis-store.ts). Every change that touches more than one
 * key runs as one script, so Redis applies it whole and alone: two masters leasing, sweeping or
 * completing at the same moment see each other's changes complete or not at all, and a lease runs
 * out exactly once however many masters notice it.
 *
 * Keys, under the prefix P:
 * - `P t:<id>`: a task, a hash (fields below);
 * - `P k:<idempotency key>`: the id of the task that holds the key;
 * - `P ready`: a list of queued ids, oldest first (a released task goes back to the front);
 * - `P delayed`: a sorted set of ids waiting out a retry backoff, by when they may run;
 * - `P running`: a sorted set of leased ids, by when their lease runs out;
 * - `P finished`: a list of retained finished ids in the order they finished;
 * - `P counts`: a hash of `succeeded`, `failed` and `live` (the budget of queued and running);
 * - `P workers`: a sorted set of worker ids by when each last called;
 * - `P slots`: a hash of worker id to the task slots of its latest lease, for the workers in
 *   `P workers` that have leased since they were last forgotten;
 * - channels `P queued` (tasks were queued) and `P finished` (a watched task finished: the message
 *   is its view, as `views` below).
 *
 * A task hash holds `watched` once a client has waited for it (`tfWatch`): only such a task's
 * finish is published, so a master that runs tasks nobody waits on pays no message per task.
 *
 * The keys a script touches are built inside it from the prefix, which Redis allows on a single
 * server but not in Redis Cluster (there every key has to be passed in KEYS).
 *
 * Every script takes the same five leading arguments (see `run` in redis-store.ts) and answers
 * `{answer, ended, finished, views}`: `ended` lists the attempts that ended in it as triples of
 * id, outcome and when the lease began, `finished` the statuses of the tasks that finished, so the
 * master that ran it can tell its observer (metrics) exactly once; `views` the watched tasks that
 * finished, each a JSON array of the `VIEW_FIELDS` after the id, so the master that ran it answers
 * its own waiting clients without waiting for the message.
 */

/** The task fields a client sees, in the order of a view array after the id. */
export const VIEW_FIELDS = [
  "type",
  "status",
  "attempts",
  "result",
  "error",
  "createdAt",
  "startedAt",
  "finishedAt",
] as const;

const common = `
local P = ARGV[1]
local NOW = tonumber(ARGV[2])
local LEASE_MS = tonumber(ARGV[3])
local LEASE_SECONDS = ARGV[4]
local RESULT_MAX_COUNT = tonumber(ARGV[5])
local READY, DELAYED, RUNNING = P .. 'ready', P .. 'delayed', P .. 'running'
local FINISHED, COUNTS, WORKERS = P .. 'finished', P .. 'counts', P .. 'workers'
local SLOTS = P .. 'slots'
local ended, done, views = {}, {}, {}
local queuedSome = false
local VIEW_FIELDS = {${VIEW_FIELDS.map((field) => `'${field}'`).join(", ")}}

local function tk(id) return P .. 't:' .. id end
-- Integers as Redis should store them: Lua prints large numbers in exponent notation otherwise.
local function int(n) return string.format('%d', n) end

-- The task's id, then its VIEW_FIELDS (false where a field is absent).
local function viewOf(id)
  local f = redis.call('HMGET', tk(id), unpack(VIEW_FIELDS))
  table.insert(f, 1, id)
  return f
end

-- Marks the worker active now; false when it is one too many to track (and is not).
local function noteWorker(worker, maxTracked)
  if redis.call('ZSCORE', WORKERS, worker) or redis.call('ZCARD', WORKERS) < maxTracked then
    redis.call('ZADD', WORKERS, int(NOW), worker)
    return true
  end
  return false
end

local function drop(id)
  local key = redis.call('HGET', tk(id), 'key')
  if key and key ~= '' and redis.call('GET', P .. 'k:' .. key) == id then
    redis.call('DEL', P .. 'k:' .. key)
  end
  redis.call('DEL', tk(id))
end

local function finish(id, status)
  local t = tk(id)
  local charge = tonumber(redis.call('HGET', t, 'charge')) or 0
  redis.call('HINCRBY', COUNTS, 'live', -charge)
  redis.call('HSET', t, 'status', status, 'finishedAt', int(NOW), 'charge', 0)
  if redis.call('HEXISTS', t, 'watched') == 1 then
    local view = cjson.encode(viewOf(id))
    views[#views + 1] = view
    redis.call('PUBLISH', P .. 'finished', view)
  end
  -- The API never shows the payload of a finished task, so it need not be kept.
  redis.call('HDEL', t, 'payload')
  redis.call('HINCRBY', COUNTS, status, 1)
  redis.call('RPUSH', FINISHED, id)
  while redis.call('LLEN', FINISHED) > RESULT_MAX_COUNT do drop(redis.call('LPOP', FINISHED)) end
  done[#done + 1] = status
end

local function expire(id)
  local t = tk(id)
  local f = redis.call('HMGET', t, 'attempts', 'maxAttempts', 'leasedAt', 'timeoutSeconds',
    'leaseExpiresAt')
  local attempts, leasedAt = tonumber(f[1]), tonumber(f[3])
  redis.call('ZREM', RUNNING, id)
  local err
  if NOW >= leasedAt + tonumber(f[4]) * 1000 + LEASE_MS then
    err = 'attempt ' .. f[1] .. ' timed out after ' .. f[4] .. 's'
  else
    err = 'attempt ' .. f[1] .. ' lost its lease (not renewed within ' .. LEASE_SECONDS .. 's)'
  end
  redis.call('HSET', t, 'error', err, 'leaseId', '', 'leaseWorker', '')
  ended[#ended + 1] = id
  ended[#ended + 1] = 'expired'
  ended[#ended + 1] = f[3]
  if attempts < tonumber(f[2]) then
    -- Ready again since the lease ran out, not since a sweep (or a late call) noticed.
    redis.call('HSET', t, 'status', 'queued', 'readySince', f[5])
    redis.call('RPUSH', READY, id)
    queuedSome = true
  else
    finish(id, 'failed')
  end
end

-- The lease is the task's current one, held by this worker, and has not run out; one that has
-- run out is expired now, whoever notices first.
local function holdsLive(id, leaseId, worker)
  local f = redis.call('HMGET', tk(id), 'status', 'leaseId', 'leaseWorker', 'leaseExpiresAt')
  if f[1] ~= 'running' or f[2] ~= leaseId or f[3] ~= worker then return false end
  if NOW < tonumber(f[4]) then return true end
  expire(id)
  return false
end

-- Takes a running task out of its lease as if it had never been leased.
local function unlease(id)
  local t = tk(id)
  redis.call('ZREM', RUNNING, id)
  if redis.call('HINCRBY', t, 'attempts', -1) == 0 then redis.call('HSET', t, 'startedAt', 0) end
  redis.call('HSET', t, 'leaseId', '', 'leaseWorker', '')
end

-- Queues the retries that are due, each ready since the end of its backoff (its score).
local function promoteDue(limit)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', int(NOW), 'WITHSCORES',
    'LIMIT', 0, limit)
  for i = 1, #due, 2 do
    redis.call('ZREM', DELAYED, due[i])
    redis.call('HSET', tk(due[i]), 'readySince', int(tonumber(due[i + 1])))
    redis.call('RPUSH', READY, due[i])
  end
  if #due > 0 then queuedSome = true end
  return #due / 2
end

-- Leases up to max queued tasks to the worker, under the lease ids ARGV[idAt + 1] onwards, fewer
-- when their payloads together would pass maxBytes (-1: no cap; one task always goes); remembers
-- the worker's slots when it is tracked. Answers 6 per task: id, leaseId, type, payload, attempt,
-- timeoutSeconds.
local function leaseTasks(worker, tracked, max, maxBytes, slots, idAt)
  -- Written only when it changes: a worker sends the same slots with every lease, and an
  -- unchanged HSET would still go to the append-only file each time.
  if tracked and redis.call('HGET', SLOTS, worker) ~= slots then
    redis.call('HSET', SLOTS, worker, slots)
  end
  promoteDue(max)
  local out = {}
  local n, bytes = 0, 0
  local expires = int(NOW + LEASE_MS)
  while n < max do
    local id = redis.call('LINDEX', READY, 0)
    if not id then break end
    local t = tk(id)
    local f = redis.call('HMGET', t, 'status', 'payloadBytes', 'startedAt')
    if f[1] ~= 'queued' then
      -- Not a queued task (it cannot happen while every change goes through these scripts).
      redis.call('LPOP', READY)
    else
      local size = tonumber(f[2])
      if n > 0 and maxBytes >= 0 and bytes + size > maxBytes then break end
      redis.call('LPOP', READY)
      n = n + 1
      bytes = bytes + size
      local leaseId = ARGV[idAt + n]
      local attempt = redis.call('HINCRBY', t, 'attempts', 1)
      redis.call('HSET', t, 'status', 'running', 'leaseId', leaseId, 'leaseWorker', worker,
        'leasedAt', int(NOW), 'leaseExpiresAt', expires)
      if f[3] == '0' then redis.call('HSET', t, 'startedAt', int(NOW)) end
      redis.call('ZADD', RUNNING, expires, id)
      local g = redis.call('HMGET', t, 'type', 'payload', 'timeoutSeconds')
      out[#out + 1] = id
      out[#out + 1] = leaseId
      out[#out + 1] = g[1]
      out[#out + 1] = g[2]
      out[#out + 1] = attempt
      out[#out + 1] = g[3]
    end
  end
  return out
end

local function reply(answer)
  if queuedSome then redis.call('PUBLISH', P .. 'queued', '') end
  return {answer, ended, done, views}
end
`;

/**
 * ARGV after the header: budget (-1: none); a lease for a poll waiting on the master that submits
 * (so the poll need not wait for another script): its workerId ('' for none), max, leaseMaxBytes,
 * tracked workers max and slots; watch (1: the tasks created are marked watched, for a client that
 * submits and waits; 0: not); then `max` fresh lease ids; then 8 per task: id, type, payload
 * (JSON), idempotency key ('' for none), maxAttempts, timeoutSeconds, payloadBytes, charge.
 * Answers `{'ok', created, leased, [id, status, created (0/1)]…}` (`leased` as `leaseTasks`
 * answers it), `{'over', live, needed}` or `{'collision'}` (a fresh id is taken; the caller tries
 * again with new ids). A batch is taken whole or not at all.
 */
const submit = `
local budget = tonumber(ARGV[6])
local leaseWorker, leaseMax = ARGV[7], tonumber(ARGV[8])
local watch = ARGV[12] == '1'
local first = 13 + leaseMax
local seen = {}
local needed = 0
for b = first, #ARGV, 8 do
  if redis.call('EXISTS', tk(ARGV[b])) == 1 then return reply({'collision'}) end
  local key = ARGV[b + 3]
  if key == '' then
    needed = needed + tonumber(ARGV[b + 7])
  elseif not seen[key] and not redis.call('GET', P .. 'k:' .. key) then
    seen[key] = true
    needed = needed + tonumber(ARGV[b + 7])
  end
end
local live = tonumber(redis.call('HGET', COUNTS, 'live')) or 0
if needed > 0 and budget >= 0 and live + needed > budget then
  return reply({'over', int(live), int(needed)})
end
local out = {'ok', 0, {}}
local created = 0
for b = first, #ARGV, 8 do
  local id, key = ARGV[b], ARGV[b + 3]
  local existing = false
  if key ~= '' then existing = redis.call('GET', P .. 'k:' .. key) end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = redis.call('HGET', tk(existing), 'status')
    out[#out + 1] = 0
  else
    redis.call('HSET', tk(id), 'type', ARGV[b + 1], 'payload', ARGV[b + 2], 'key', key,
      'maxAttempts', ARGV[b + 4], 'timeoutSeconds', ARGV[b + 5], 'payloadBytes', ARGV[b + 6],
      'charge', ARGV[b + 7], 'status', 'queued', 'attempts', 0, 'createdAt', int(NOW),
      'startedAt', 0, 'finishedAt', 0, 'leaseId', '', 'leaseWorker', '', 'leasedAt', 0,
      'leaseExpiresAt', 0)
    if watch then redis.call('HSET', tk(id), 'watched', 1) end
    if key ~= '' then redis.call('SET', P .. 'k:' .. key, id) end
    redis.call('RPUSH', READY, id)
    created = created + 1
    out[#out + 1] = id
    out[#out + 1] = 'queued'
    out[#out + 1] = 1
  end
end
redis.call('HINCRBY', COUNTS, 'live', int(needed))
out[2] = created
if created > 0 and leaseWorker ~= '' then
  local tracked = noteWorker(leaseWorker, tonumber(ARGV[10]))
  out[3] = leaseTasks(leaseWorker, tracked, leaseMax, tonumber(ARGV[9]), ARGV[11], 12)
end
-- What the poll took need not wake the others.
if created > #out[3] / 6 then queuedSome = true end
return reply(out)
`;

/**
 * ARGV after the header: workerId, max, leaseMaxBytes (-1: none), tracked workers max, the
 * worker's slots, then `max` fresh lease ids. Leases the whole batch in one go; answers as
 * `leaseTasks`.
 */
const lease = `
local worker = ARGV[6]
local tracked = noteWorker(worker, tonumber(ARGV[9]))
return reply(leaseTasks(worker, tracked, tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[10], 10))
`;

/**
 * ARGV after the header: the task's id. Answers the task's view (as `viewOf`), or nil when there
 * is no such task; marks an unfinished one watched, so that its finish is published.
 */
const watch = `
local f = viewOf(ARGV[6])
if not f[2] then return reply(false) end
if f[3] ~= 'succeeded' and f[3] ~= 'failed' then redis.call('HSET', tk(ARGV[6]), 'watched', 1) end
return reply(f)
`;

/**
 * ARGV after the header: workerId, tracked workers max, then pairs of id and leaseId. Answers 1
 * (renewed) or 0 (lost) per pair.
 */
const renew = `
local worker = ARGV[6]
noteWorker(worker, tonumber(ARGV[7]))
local out = {}
for i = 8, #ARGV, 2 do
  local id = ARGV[i]
  if holdsLive(id, ARGV[i + 1], worker) then
    local t = tk(id)
    local f = redis.call('HMGET', t, 'leasedAt', 'timeoutSeconds')
    -- Past the attempt's timeout plus one lease period renewals stop extending the lease.
    local deadline = tonumber(f[1]) + tonumber(f[2]) * 1000 + LEASE_MS
    local expires = int(math.min(NOW + LEASE_MS, deadline))
    redis.call('HSET', t, 'leaseExpiresAt', expires)
    redis.call('ZADD', RUNNING, expires, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return reply(out)
`;

/**
 * ARGV after the header: workerId, tracked workers max, retry backoff base, backoff cap, then the
 * next lease: its max (0: none), leaseMaxBytes and the worker's slots, then `max` fresh lease ids;
 * then 6 per completion: id, leaseId, ok (1/0), result as JSON or the error, retryable (1/0), a
 * random number in [0, 1) for the jitter. Answers `{verdicts, leased}`: per completion
 * 'accepted', 'not_found' or 'lease_lost', and the next lease's tasks as `leaseTasks` answers them.
 */
const complete = `
local worker = ARGV[6]
local tracked = noteWorker(worker, tonumber(ARGV[7]))
local base, cap = tonumber(ARGV[8]), math.max(tonumber(ARGV[8]), tonumber(ARGV[9]))
local nextMax = tonumber(ARGV[10])
local out = {}
for i = 13 + nextMax, #ARGV, 6 do
  local id, leaseId = ARGV[i], ARGV[i + 1]
  local t = tk(id)
  if redis.call('EXISTS', t) == 0 then
    out[#out + 1] = 'not_found'
  elseif holdsLive(id, leaseId, worker) then
    local f = redis.call('HMGET', t, 'leasedAt', 'attempts', 'maxAttempts')
    local attempts = tonumber(f[2])
    redis.call('ZREM', RUNNING, id)
    ended[#ended + 1] = id
    ended[#ended + 1] = ARGV[i + 2] == '1' and 'succeeded' or 'failed'
    ended[#ended + 1] = f[1]
    if ARGV[i + 2] == '1' then
      redis.call('HSET', t, 'result', ARGV[i + 3])
      redis.call('HDEL', t, 'error')
      finish(id, 'succeeded')
    else
      redis.call('HSET', t, 'error', ARGV[i + 3])
      if ARGV[i + 4] == '1' and attempts < tonumber(f[3]) then
        redis.call('HSET', t, 'status', 'queued')
        -- Exponential from the base, capped, with equal jitter (as backoffDelayMs computes it).
        local ceiling = math.min(cap, base * 2 ^ math.min(attempts - 1, 30))
        local delay = math.floor(ceiling / 2 + tonumber(ARGV[i + 5]) * (ceiling / 2) + 0.5)
        if delay <= 0 then
          redis.call('HSET', t, 'readySince', int(NOW))
          redis.call('RPUSH', READY, id)
          queuedSome = true
        else
          redis.call('ZADD', DELAYED, int(NOW + delay), id)
        end
      else
        finish(id, 'failed')
      end
    end
    out[#out + 1] = 'accepted'
  else
    local f = redis.call('HMGET', t, 'status', 'leaseId', 'leaseWorker')
    if f[1] ~= 'running' and f[2] ~= '' and f[2] == leaseId and f[3] == worker then
      -- The same lease reporting again (a worker retrying a request whose answer it lost):
      -- the first report stands and nothing is counted twice.
      out[#out + 1] = 'accepted'
    else
      out[#out + 1] = 'lease_lost'
    end
  end
end
local leased = {}
if nextMax > 0 then
  leased = leaseTasks(worker, tracked, nextMax, tonumber(ARGV[11]), ARGV[12], 12)
end
return reply({out, leased})
`;

/** ARGV after the header: workerId, tracked workers max, then pairs of id and leaseId. */
const release = `
local worker = ARGV[6]
noteWorker(worker, tonumber(ARGV[7]))
local out = {}
for i = 8, #ARGV, 2 do
  local id = ARGV[i]
  if holdsLive(id, ARGV[i + 1], worker) then
    unlease(id)
    redis.call('HSET', tk(id), 'status', 'queued')
    -- It was at the head of the queue once already; it should not wait behind the whole queue,
    -- and it keeps the time it became ready then (its readySince).
    redis.call('LPUSH', READY, id)
    queuedSome = true
    out[#out + 1] = id
  end
end
return reply(out)
`;

/** ARGV after the header: workerId, the error, then pairs of id and leaseId. */
const failUnsent = `
local worker = ARGV[6]
for i = 8, #ARGV, 2 do
  local id = ARGV[i]
  if holdsLive(id, ARGV[i + 1], worker) then
    unlease(id)
    redis.call('HSET', tk(id), 'error', ARGV[7])
    finish(id, 'failed')
  end
end
return reply(0)
`;

/**
 * ARGV after the header: result TTL (ms), active worker window (ms), the most of each kind of
 * work to do in one go (the caller runs the script again while `more` says so, so one sweep of a
 * large backlog does not hold Redis for long). Answers `{more (0/1), ready count}`.
 */
const sweep = `
local ttl, window, limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local expired = redis.call('ZRANGEBYSCORE', RUNNING, '-inf', int(NOW), 'LIMIT', 0, limit)
for i = 1, #expired do expire(expired[i]) end
local promoted = promoteDue(limit)
local oldest = NOW - ttl
local dropped = 0
while dropped < limit do
  local id = redis.call('LINDEX', FINISHED, 0)
  if not id then break end
  local finishedAt = tonumber(redis.call('HGET', tk(id), 'finishedAt'))
  if finishedAt and finishedAt > oldest then break end
  redis.call('LPOP', FINISHED)
  drop(id)
  dropped = dropped + 1
end
-- Workers not seen within the window are forgotten, and their slots with them.
local gone = redis.call('ZRANGEBYSCORE', WORKERS, '-inf', '(' .. int(NOW - window),
  'LIMIT', 0, limit)
for i = 1, #gone do
  redis.call('ZREM', WORKERS, gone[i])
  redis.call('HDEL', SLOTS, gone[i])
end
local more = (#expired == limit or promoted == limit or dropped == limit or #gone == limit)
  and 1 or 0
return reply({more, redis.call('LLEN', READY)})
`;

/**
 * ARGV after the header: active worker window (ms). Answers ready, delayed, running, succeeded,
 * failed, retained, active workers, live bytes, the active workers' slots and how long the head
 * of the ready queue has been ready (ms), read at one instant. A task without `readySince` has been
 * ready since its creation: a submit leaves the field out (one field less in every queued task's
 * hash), as did masters from before it.
 */
const stats = `
local c = redis.call('HMGET', COUNTS, 'succeeded', 'failed', 'live')
local active = redis.call('ZRANGEBYSCORE', WORKERS, int(NOW - tonumber(ARGV[6])), '+inf')
local slots = 0
for i = 1, #active do slots = slots + (tonumber(redis.call('HGET', SLOTS, active[i])) or 0) end
local waited = 0
local head = redis.call('LINDEX', READY, 0)
if head then
  local f = redis.call('HMGET', tk(head), 'readySince', 'createdAt')
  local since = tonumber(f[1]) or tonumber(f[2])
  if since and NOW > since then waited = NOW - since end
end
return reply({
  redis.call('LLEN', READY), redis.call('ZCARD', DELAYED), redis.call('ZCARD', RUNNING),
  tonumber(c[1]) or 0, tonumber(c[2]) or 0, redis.call('LLEN', FINISHED),
  #active, tonumber(c[3]) or 0, slots, waited
})
`;

export const scripts = {
  tfSubmit: common + submit,
  tfLease: common + lease,
  tfWatch: common + watch,
  tfRenew: common + renew,
  tfComplete: common + complete,
  tfRelease: common + release,
  tfFailUnsent: common + failUnsent,
  tfSweep: common + sweep,
  tfStats: common + stats,
} as const;

export type ScriptName = keyof typeof scripts;
