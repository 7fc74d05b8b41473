-- enqueue: ARGV = prefix, njobs, then per job: nfields, field, value, ..., then the
-- job.scheduled events envelope to publish with the insert ('' for none).
-- Returns per job: false (stored as given) or the flat record returned in its place.
-- A stored job that is due goes straight to an idle worker when one waits (keys.py,
-- "Push"); the others wake the workers.
local out = {}
local waiting = false
local pos = 3
for j = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[pos])
  local r, id, h = insert_job(ARGV, pos + 1, pos + n)
  pos = pos + n + 1
  if r == false and not push_to_idle(id, h, h.created_at or h.run_at) then waiting = true end
  out[j] = r
end
if waiting then wake() end
local events = ARGV[pos]
if events ~= nil and events ~= '' then
  redis.call('PUBLISH', k_events(), events)
end
return out
