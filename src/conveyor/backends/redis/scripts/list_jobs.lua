-- list_jobs: ARGV = prefix, status ('' = any), topic ('' = any), limit, offset,
-- after ('' = none), before ('' = none), status...
-- Returns {total, beyond, record...}: records in walking order, newest first (ids are
-- time-sortable, like ZREVRANGEBYLEX), or oldest first above a `before` cursor;
-- `beyond` = 1 when a matching job lies behind the cursor (id >= after, id <= before).
-- A job is in exactly one (status, topic) index, so a listing merges the indexes of
-- the statuses and topics it asks for (every topic: those of P:topics): no index per
-- filter to keep on every state change.
local status, topic = ARGV[2], ARGV[3]
local limit, offset = tonumber(ARGV[4]), tonumber(ARGV[5])
local after, before = ARGV[6], ARGV[7]
local statuses = {status}
if status == '' then statuses = {unpack(ARGV, 8)} end
local topics = {topic}
if topic == '' then topics = redis.call('SMEMBERS', k_topics()) end

-- The indexes that hold jobs (the others cannot add to the page), and the total.
local keys = {}
local total = 0
for _, s in ipairs(statuses) do
  for _, t in ipairs(topics) do
    local key = k_topic_status(s, t)
    local n = redis.call('ZCARD', key)
    if n > 0 then
      keys[#keys + 1] = key
      total = total + n
    end
  end
end

-- Walking direction: towards older ids (descending) unless a `before` cursor is given.
local up = before ~= ''
local first, last = '+', '-'
if up then first, last = '(' .. before, '+' elseif after ~= '' then first = '(' .. after end
local function range(key, from, count)
  if up then return redis.call('ZRANGEBYLEX', key, from, last, 'LIMIT', 0, count) end
  return redis.call('ZREVRANGEBYLEX', key, from, last, 'LIMIT', 0, count)
end

local beyond = 0
if after ~= '' or before ~= '' then
  for _, key in ipairs(keys) do
    local hit
    if up then hit = redis.call('ZREVRANGEBYLEX', key, '[' .. before, '-', 'LIMIT', 0, 1)
    else hit = redis.call('ZRANGEBYLEX', key, '[' .. after, '+', 'LIMIT', 0, 1) end
    if #hit > 0 then beyond = 1 break end
  end
end
local out = {total, beyond}
if limit <= 0 or offset >= total then return out end

local ids
if #keys == 1 then
  ids = redis.call(up and 'ZRANGEBYLEX' or 'ZREVRANGEBYLEX', keys[1], first, last, 'LIMIT', offset, limit)
else
  -- k-way merge in walking order, reading each index in chunks past its last id.
  -- Ids compare bytewise (as the zsets order them), not with Lua's locale-aware '<'.
  local function ahead(a, b)
    if a == b then return false end
    local i = 1
    while string.byte(a, i) == string.byte(b, i) do i = i + 1 end
    local x, y = string.byte(a, i) or -1, string.byte(b, i) or -1
    if up then return x < y end
    return x > y
  end
  -- Chunks sized for the whole walk (offset + limit ids), capped: few round trips per index.
  local chunk = math.min(math.max(limit + offset, 32), 1000)
  -- The next id of index `h` (nil when it has no more), read past its last id.
  local function head_id(h)
    if h.i > #h.buf then
      if not h.more then return nil end
      h.buf = range(h.key, h.last and ('(' .. h.last) or first, chunk)
      h.i = 1
      h.more = #h.buf == chunk
      if #h.buf == 0 then return nil end
    end
    return h.buf[h.i]
  end
  -- A binary heap of the indexes by their next id, the first in walking order on top:
  -- each id of the page costs log(indexes) comparisons (a listing of every topic may
  -- merge hundreds of indexes).
  local heap = {}
  local function sift_down(i)
    local n = #heap
    while true do
      local top, l, r = i, 2 * i, 2 * i + 1
      if l <= n and ahead(heap[l].id, heap[top].id) then top = l end
      if r <= n and ahead(heap[r].id, heap[top].id) then top = r end
      if top == i then return end
      heap[i], heap[top] = heap[top], heap[i]
      i = top
    end
  end
  for _, key in ipairs(keys) do
    local h = {key = key, buf = {}, i = 1, more = true}
    h.id = head_id(h)
    if h.id then heap[#heap + 1] = h end
  end
  for i = math.floor(#heap / 2), 1, -1 do sift_down(i) end
  ids = {}
  local seen = 0
  while #ids < limit and #heap > 0 do
    local best = heap[1]
    seen = seen + 1
    if seen > offset then ids[#ids + 1] = best.id end
    best.last = best.id
    best.i = best.i + 1
    best.id = head_id(best)
    if best.id == nil then
      heap[1] = heap[#heap]
      heap[#heap] = nil
    end
    if #heap > 0 then sift_down(1) end
  end
end
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', k_job(id))
end
return out
