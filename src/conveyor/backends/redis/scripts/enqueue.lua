-- enqueue: ARGV = prefix, njobs, then per job: nfields, field, value, ..., the job's
-- job.scheduled events (JSON objects joined by ',', '' for none); last, the opening of
-- the events envelope ('{"o":<origin>,"e":[', '' for no events).
-- Returns per job: false (stored as given) or the flat record returned in its place;
-- or {'duplicate', id}, nothing stored, when a job id is already stored or given twice
-- (ids are unique: checked for the whole batch before anything is written).
-- Only the events of the jobs stored are published (not those of a job whose id or
-- unique key was taken), with the insert; one wake-up for the whole batch.
local seen = {}
local pos = 3
for j = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[pos])
  for i = pos + 1, pos + n, 2 do
    if ARGV[i] == 'id' then
      local id = ARGV[i + 1]
      if seen[id] or redis.call('EXISTS', k_job(id)) == 1 then return {'duplicate', id} end
      seen[id] = true
      break
    end
  end
  pos = pos + n + 2
end
local out = {}
local events = {}
local stored = false
pos = 3
for j = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[pos])
  local r = insert_job(ARGV, pos + 1, pos + n)
  local ev = ARGV[pos + n + 1]
  pos = pos + n + 2
  if r == false then
    stored = true
    if ev ~= '' then events[#events + 1] = ev end
  end
  out[j] = r
end
if stored then wake() end
if #events > 0 and ARGV[pos] ~= '' then
  redis.call('PUBLISH', k_events(), ARGV[pos] .. table.concat(events, ',') .. ']}')
end
return out
