-- list_jobs: ARGV = prefix, status ('' = any), topic ('' = any), limit, offset,
-- after ('' = none), before ('' = none), status...
-- Returns {total, beyond, record...}: records in walking order, newest first (ids are
-- time-sortable, like ZREVRANGEBYLEX), or oldest first above a `before` cursor;
-- `beyond` = 1 when a matching job lies behind the cursor (id >= after, id <= before).
-- A job is in exactly one status index, so "any status" merges those indexes (one per
-- status, of the topic when one is given): no index of every job to keep on enqueue.
local status, topic = ARGV[2], ARGV[3]
local limit, offset = tonumber(ARGV[4]), tonumber(ARGV[5])
local after, before = ARGV[6], ARGV[7]
local function index_of(s)
  if topic ~= '' then return k_topic_status(s, topic) end
  return k_status(s)
end

local keys = {}
if status ~= '' then
  keys[1] = index_of(status)
else
  for i = 8, #ARGV do keys[#keys + 1] = index_of(ARGV[i]) end
end
local total = 0
for _, key in ipairs(keys) do total = total + redis.call('ZCARD', key) end

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
  local heads = {}
  for _, key in ipairs(keys) do
    heads[#heads + 1] = {key = key, buf = {}, i = 1, more = true}
  end
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
  ids = {}
  local seen = 0
  while #ids < limit do
    local best, best_id
    for _, h in ipairs(heads) do
      local id = head_id(h)
      if id and (best_id == nil or ahead(id, best_id)) then best, best_id = h, id end
    end
    if best == nil then break end
    best.last = best_id
    best.i = best.i + 1
    seen = seen + 1
    if seen > offset then ids[#ids + 1] = best_id end
  end
end
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', k_job(id))
end
return out
