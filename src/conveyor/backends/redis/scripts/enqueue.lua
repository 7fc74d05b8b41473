-- enqueue: ARGV = prefix, njobs, then per job: nfields, field, value, ..., then the
-- job.scheduled events envelope to publish with the insert ('' for none).
-- Returns per job: false (stored as given) or the flat record returned in its place.
local out = {}
local inserted = false
local pos = 3
for j = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[pos])
  local fields = {}
  for i = 1, n do fields[i] = ARGV[pos + i] end
  pos = pos + n + 1
  local r = insert_job(fields)
  if r == false then inserted = true end
  out[j] = r
end
if inserted then wake() end
local events = ARGV[pos]
if events ~= nil and events ~= '' then
  redis.call('PUBLISH', k_events(), events)
end
return out
