-- apply: manual operations (conveyor.core.operation.JobOp) in order, each by the rules
-- of conveyor.core.lifecycle.apply driven by the op's fields ('' keeps a field).
-- ARGV = prefix, now, the ops: a JSON array of arrays of 17 strings: id, status,
--   has_result, result, restart, run_at, has_payload, payload, priority, max_retries,
--   has_metadata, metadata, has_last_error, last_error, cancel_requested ('1'/'0'/''),
--   remove ('1'/'0'), the allowed states joined by ','.
-- Returns per op {0, record} (for a remove: the record deleted) | {1} not found |
-- {2, status} not allowed | {3, status, holder} when the op would make a second active
-- job with the job's unique_key.
local now = ARGV[2]
local out = {}
local woke = false
local ops = cjson.decode(ARGV[3])
for j = 1, #ops do
  local o = ops[j]
  local id = o[1]
  local key = k_job(id)
  local flat = redis.call('HGETALL', key)
  local h = to_table(flat)
  if #flat == 0 then
    out[j] = {1}
  elseif not string.find(',' .. o[17] .. ',', ',' .. h.status .. ',', 1, true) then
    out[j] = {2, h.status}
  elseif o[16] == '1' then
    remove_job(id, h)
    out[j] = {0, flat}
  else
    local new = to_table(flat)
    local status = o[2]
    if status ~= '' then
      new.status = status
      if FINISHED[status] then new.finished_at = now else new.finished_at = nil end
      if status == 'completed' then
        if o[3] == '1' then new.result = o[4] else new.result = nil end
      end
    end
    if o[5] == '1' then
      new.attempts, new.snoozes, new.started_at, new.result = '0', '0', nil, nil
    end
    if o[6] ~= '' then new.run_at = o[6] end
    if o[7] == '1' then new.payload = o[8] end
    if o[9] ~= '' then new.priority = o[9] end
    if o[10] ~= '' then new.max_retries = o[10] end
    if o[11] == '1' then new.metadata = o[12] end
    if o[13] == '1' then new.last_error = o[14] end
    if o[15] ~= '' then new.cancel_requested = o[15] end
    if new.status ~= 'processing' then new.locked_by, new.locked_until = nil, nil end
    new.updated_at = now
    local holder = nil
    if not ACTIVE[h.status] and ACTIVE[new.status] and new.unique_key then
      holder = redis.call('HGET', k_unique(), unique_field(new.topic, new.unique_key))
      if holder == id then holder = nil end
    end
    if holder then
      out[j] = {3, h.status, holder}
    else
      local set, del = {}, {}
      for f, v in pairs(new) do
        if h[f] ~= v then set[#set + 1] = f; set[#set + 1] = v end
      end
      for f in pairs(h) do
        if new[f] == nil then del[#del + 1] = f end
      end
      unindex_state(id, h)
      if #del > 0 then redis.call('HDEL', key, unpack(del)) end
      if #set > 0 then redis.call('HSET', key, unpack(set)) end
      index_state(id, new, now)
      if new.status == 'pending' then woke = true end
      out[j] = {0, redis.call('HGETALL', key)}
    end
  end
end
if woke then wake() end
return out
