-- finish: ARGV = prefix, now, errors_kept, the outcomes: a JSON array of arrays of 12
-- strings: id, locked_by, attempts, status, run_at ('' = now), has_result, result,
-- has_error, last_error, refund ('1'/'0'), snooze ('1'/'0'), errors entry ('' = none);
-- then, to claim the next jobs in the same call (the worker's finish_and_claim), the
-- claimer's worker_id, limit, locked_until and topics (a JSON array).
-- The rules of conveyor.core.lifecycle.apply for an attempt's outcome. Fenced on
-- status = processing, locked_by and attempts. Returns per outcome the flat record, or
-- false when the fence did not hold; with a claim, {those, the claimed flat records}.
local now = ARGV[2]
local kept = tonumber(ARGV[3])
local out = {}
local woke = false
local outcomes = cjson.decode(ARGV[4])
local later = #outcomes > 1 and new_batch() or nil
for j = 1, #outcomes do
  local o = outcomes[j]
  local id, locked_by, attempts, status = o[1], o[2], o[3], o[4]
  local key = k_job(id)
  local flat = redis.call('HGETALL', key)
  local h = to_table(flat)
  if #flat == 0 or h.status ~= 'processing' or h.locked_by ~= locked_by or h.attempts ~= attempts then
    out[j] = false
  else
    unindex_state(id, h, later)
    if status == 'pending' and h.cancel_requested == '1' then status = 'cancelled' end
    local set = {'status', status, 'updated_at', now}
    local del = {'locked_by', 'locked_until'}
    h.status, h.updated_at, h.locked_by, h.locked_until = status, now, nil, nil
    if FINISHED[status] then
      set[#set + 1] = 'finished_at'; set[#set + 1] = now; h.finished_at = now
    else
      del[#del + 1] = 'finished_at'; h.finished_at = nil
    end
    if status == 'pending' then
      local run_at = o[5]
      if run_at == '' then run_at = now end
      set[#set + 1] = 'run_at'; set[#set + 1] = run_at; h.run_at = run_at
      set[#set + 1] = 'cancel_requested'; set[#set + 1] = '0'
      woke = true
    end
    if status == 'completed' then
      if o[6] == '1' then
        set[#set + 1] = 'result'; set[#set + 1] = o[7]
      else
        del[#del + 1] = 'result'
      end
    end
    if o[8] == '1' then
      set[#set + 1] = 'last_error'; set[#set + 1] = o[9]
    end
    if o[10] == '1' then
      set[#set + 1] = 'attempts'; set[#set + 1] = tostring(tonumber(h.attempts) - 1)
    end
    if o[11] == '1' then
      set[#set + 1] = 'snoozes'; set[#set + 1] = tostring(tonumber(h.snoozes or '0') + 1)
    end
    if o[12] ~= '' then
      -- A failed attempt: append its entry, keep the newest `kept`.
      local list = {}
      if h.errors then list = cjson.decode(h.errors) end
      list[#list + 1] = cjson.decode(o[12])
      while #list > kept do table.remove(list, 1) end
      set[#set + 1] = 'errors'; set[#set + 1] = cjson.encode(list)
    end
    redis.call('HDEL', key, unpack(del))
    redis.call('HSET', key, unpack(set))
    -- The record returned is the one read, with these changes: no second HGETALL.
    for i = 1, #del do h[del[i]] = nil end
    for i = 1, #set, 2 do h[set[i]] = set[i + 1] end
    index_state(id, h, now, later)
    local rec = {}
    for f, v in pairs(h) do
      rec[#rec + 1] = f
      rec[#rec + 1] = v
    end
    out[j] = rec
  end
end
-- Before the claim below: a job retried at once is due again (in its ready index).
flush_index(later)
if woke then wake() end
if ARGV[5] then
  return {out, claim_due(ARGV[5], tonumber(ARGV[6]), now, ARGV[7], cjson.decode(ARGV[8]))}
end
return out
