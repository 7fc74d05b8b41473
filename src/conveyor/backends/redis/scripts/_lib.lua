-- Shared helpers: each script gets those it uses, before its body (lua.py).
-- Times are integer microseconds since the epoch, kept as STRINGS: Lua 5.1 numbers are
-- doubles and tostring() would round them; tonumber() is only used to compare.

local FINISHED = {completed = true, failed = true, cancelled = true}
local FINISHED_STATUSES = {'completed', 'failed', 'cancelled'}
local ACTIVE = {pending = true, processing = true}

local function to_table(flat)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

-- Digit complements: a run_at before 1970 (-X µs) is written '-' .. (9-d for each digit
-- of X, 17 digits), so that it sorts before every later run_at ('-' < '0') and an
-- earlier one (a larger X) first.
local COMPLEMENT = {['0'] = '9', ['1'] = '8', ['2'] = '7', ['3'] = '6', ['4'] = '5',
                    ['5'] = '4', ['6'] = '3', ['7'] = '2', ['8'] = '1', ['9'] = '0'}

-- Member of P:ready:<topic>: run_at, 16 digits zero-padded (18 characters, '-' first,
-- before 1970), then the id (see keys.py): bytes order is run_at order, then id order.
local function ready_member(run_at, id)
  if string.sub(run_at, 1, 1) == '-' then
    local x = string.sub(run_at, 2)
    return '-' .. string.gsub(string.rep('0', 17 - #x) .. x, '%d', COMPLEMENT) .. id
  end
  local n = #run_at
  if n >= 16 then return run_at .. id end
  return string.rep('0', 16 - n) .. run_at .. id
end

-- The id in a P:ready member, and whether its run_at is not after `nownum`.
local function ready_entry(member, nownum)
  if string.sub(member, 1, 1) == '-' then return string.sub(member, 19), true end
  return string.sub(member, 17), tonumber(string.sub(member, 1, 16)) <= nownum
end

-- Field of P:unique for a job's topic and unique key: keys are scoped per topic. NUL
-- cannot occur in a topic nor in a unique key (both validated), so the pair is
-- unambiguous.
local function unique_field(topic, unique_key)
  return topic .. '\0' .. unique_key
end

-- A batch's writes, put aside by zrem and zadd and written by flush_index with one ZREM
-- or ZADD per index (a call from Lua costs more than a member in it), and the topics it
-- has listed in P:topics: scripts that store, claim or finish many jobs at once.
-- `later` nil: written at once (one job).
local function new_batch()
  return {rem = {}, add = {}, topics = {}}
end

-- The list of `key` in `lists` (later.rem or later.add), made on first use.
local function aside(lists, key)
  local list = lists[key]
  if list == nil then
    list = {}
    lists[key] = list
  end
  return list
end

local function zrem(later, key, member)
  if later == nil then
    redis.call('ZREM', key, member)
    return
  end
  local list = aside(later.rem, key)
  list[#list + 1] = member
end

local function zadd(later, key, score, member)
  if later == nil then
    redis.call('ZADD', key, score, member)
    return
  end
  local list = aside(later.add, key)
  list[#list + 1] = score
  list[#list + 1] = member
end

-- Removals first: a job leaves an index before it enters another (never the same one
-- twice in a batch: each job appears once). 500 members per call (unpack's stack).
local function flush_index(later)
  if later == nil then return end
  for key, list in pairs(later.rem) do
    for i = 1, #list, 500 do
      redis.call('ZREM', key, unpack(list, i, math.min(i + 499, #list)))
    end
  end
  for key, list in pairs(later.add) do
    for i = 1, #list, 1000 do
      redis.call('ZADD', key, unpack(list, i, math.min(i + 999, #list)))
    end
  end
end

-- Remove job `id` (current fields `h`) from every index that depends on its state.
-- `later`: a batch's index writes (new_batch), or nil to write them now.
local function unindex_state(id, h, later)
  local s, t = h.status, h.topic
  zrem(later, k_topic_status(s, t), id)
  if s == 'pending' then
    zrem(later, k_ready(t), ready_member(h.run_at, id))
    zrem(later, k_delayed(t), id)
  elseif s == 'processing' then
    zrem(later, k_processing(), id)
  elseif h.finished_at then
    zrem(later, k_finished(s), id)
  end
  if ACTIVE[s] and h.unique_key then
    if redis.call('HGET', k_unique(), unique_field(h.topic, h.unique_key)) == id then
      redis.call('HDEL', k_unique(), unique_field(h.topic, h.unique_key))
    end
  end
end

-- Add pending job `id` to the indexes of a pending job. `now` (µs string) is the
-- writer's clock: due by then, it goes straight to ready, else to delayed. `later`: a
-- batch's index writes (new_batch), or nil to write them now. A function of its own so
-- that enqueue.lua, which stores only pending jobs, builds no closures for the other
-- states' keys; its fields are arguments so that an insert builds no table for them.
local function index_pending(id, topic, priority, run_at, unique_key, now, later)
  zadd(later, k_topic_status('pending', topic), 0, id)
  -- A job due at once has run_at == now: equal strings need no tonumber(), two of
  -- which are ~5k instructions of an enqueue's ~150k (callgrind).
  if run_at == now or tonumber(run_at) <= tonumber(now) then
    zadd(later, k_ready(topic), -tonumber(priority), ready_member(run_at, id))
  else
    zadd(later, k_delayed(topic), run_at, id)
  end
  if unique_key then
    redis.call('HSET', k_unique(), unique_field(topic, unique_key), id)
  end
end

-- Add job `id` (new fields `h`) to the indexes of its state (`now`, `later`: as
-- index_pending's).
local function index_state(id, h, now, later)
  local s = h.status
  if s == 'pending' then
    index_pending(id, h.topic, h.priority, h.run_at, h.unique_key, now, later)
    return
  end
  zadd(later, k_topic_status(s, h.topic), 0, id)
  if s == 'processing' then
    zadd(later, k_processing(), h.locked_until or '+inf', id)
    if h.unique_key then
      redis.call('HSET', k_unique(), unique_field(h.topic, h.unique_key), id)
    end
  elseif FINISHED[s] and h.finished_at then
    zadd(later, k_finished(s), h.finished_at, id)
  end
end

-- Remove a job and every trace of it from the indexes.
local function remove_job(id, h)
  unindex_state(id, h)
  redis.call('DEL', k_job(id))
end

-- Move due job `id` (member `member` of P:ready:<t>) to processing for `worker`, with
-- its lease until `lu`. Returns the job's flat record as stored now (nil if the job's
-- hash is gone). One read, patched here: an HGETALL is a large share of a script's
-- time (its reply is encoded, then parsed back into a Lua table).
local function claim_member(worker, member, t, id, now, lu, later)
  local key = k_job(id)
  zrem(later, k_ready(t), member)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  local new = {status = 'processing', locked_by = worker, locked_until = lu, started_at = now, updated_at = now}
  local attempts
  for i = 1, #flat, 2 do
    local f = flat[i]
    if f == 'attempts' then
      attempts = tostring(tonumber(flat[i + 1]) + 1)
      flat[i + 1] = attempts
    elseif new[f] then
      flat[i + 1] = new[f]
      new[f] = nil
    end
  end
  if attempts == nil then  -- an absent attempts field is 0 (record.encode_job)
    attempts = '1'
    new.attempts = attempts
  end
  for f, v in pairs(new) do
    flat[#flat + 1] = f
    flat[#flat + 1] = v
  end
  redis.call('HSET', key, 'attempts', attempts, 'status', 'processing', 'locked_by', worker, 'locked_until', lu,
    'started_at', now, 'updated_at', now)
  zrem(later, k_topic_status('pending', t), id)
  zadd(later, k_topic_status('processing', t), 0, id)
  zadd(later, k_processing(), lu, id)
  return flat
end

-- Insert a new pending job from its record `r` (record.encode_job: created_at, the
-- values of id, topic, payload, status, priority, run_at, max_retries and fixed, read
-- here by position; then field, value pairs of the fields that differ from their
-- defaults). Callers look for an id already stored first. Returns false when inserted
-- as given, or the flat record of the active job holding the same unique_key,
-- returned in its place. `later`: as index_pending's; a batch lists each of its
-- topics once.
local function insert_job(r, later)
  local id, topic = r[2], r[3]
  local unique_key
  for i = 10, #r, 2 do
    if r[i] == 'unique_key' then unique_key = r[i + 1] end
  end
  if unique_key then
    local holder = redis.call('HGET', k_unique(), unique_field(topic, unique_key))
    if holder then
      local existing = redis.call('HGETALL', k_job(holder))
      if #existing > 0 then return existing end
    end
  end
  redis.call('HSET', k_job(id), 'id', id, 'topic', topic, 'payload', r[4], 'status', r[5], 'priority', r[6],
    'run_at', r[7], 'max_retries', r[8], 'fixed', r[9], unpack(r, 10))
  if later == nil or not later.topics[topic] then
    redis.call('SADD', k_topics(), topic)
    if later then later.topics[topic] = true end
  end
  index_pending(id, topic, r[6], r[7], unique_key, r[1], later)  -- priority, run_at, created_at
  return false
end

-- Tell idle workers to claim: the message carries no job (only claim.lua claims).
local function wake()
  redis.call('PUBLISH', k_wake(), '')
end

-- Promotion is bounded per claim so that one script never blocks Redis for long; the
-- rest is promoted by the next claims (order is exact unless more than this many
-- delayed jobs of one topic fell due at once).
local PROMOTE = 1000

-- The one claim path (claim.lua, and finish.lua when it claims the next jobs too):
-- promotes the claimer's due delayed jobs of `topics`, then moves up to `limit` due
-- jobs, in (priority desc, run_at, id) order across them, to processing for `worker`
-- with the lease until `lu`. Returns their flat records.
local function claim_due(worker, limit, now, lu, topics)
  local nownum = tonumber(now)
  local cands = {}
  for _, t in ipairs(topics) do
    local dkey = k_delayed(t)
    local due = redis.call('ZRANGEBYSCORE', dkey, '-inf', now, 'LIMIT', 0, PROMOTE)
    if #due > 0 then
      local rkey = k_ready(t)
      for _, id in ipairs(due) do
        local f = redis.call('HMGET', k_job(id), 'run_at', 'priority')
        if f[1] then redis.call('ZADD', rkey, -tonumber(f[2]), ready_member(f[1], id)) end
      end
      redis.call('ZREM', dkey, unpack(due))
    end
    local top = redis.call('ZRANGE', k_ready(t), 0, limit - 1, 'WITHSCORES')
    for j = 1, #top, 2 do
      cands[#cands + 1] = {tonumber(top[j + 1]), top[j], t}
    end
  end
  if #topics > 1 then
    table.sort(cands, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
  end
  local out = {}
  local later = #cands > 1 and new_batch() or nil
  for _, c in ipairs(cands) do
    if #out >= limit then break end
    local member, t = c[2], c[3]
    -- never early, even if a writer's clock ran ahead of this claimer's
    local id, due = ready_entry(member, nownum)
    if due then
      local flat = claim_member(worker, member, t, id, now, lu, later)
      if flat then out[#out + 1] = flat end
    end
  end
  flush_index(later)
  return out
end
