-- enqueue: ARGV = prefix, then per job: its record (a JSON array, the id second:
-- record.encode_job) and its job.scheduled events (JSON objects joined
-- by ',', '' for none); last, the opening of the events envelope ('{"o":<origin>,"e":[',
-- '' for no events).
-- Returns per job: false (stored as given) or the flat record returned in its place;
-- or {'duplicate', id}, nothing stored, when a job id is already stored or given twice
-- (ids are unique: checked for the whole batch before anything is written).
-- Only the events of the jobs stored are published (not those of a job whose id or
-- unique key was taken), with the insert; one wake-up for the whole batch.
local n = (#ARGV - 2) / 2
local flats = {}
local seen = n > 1 and {} or nil  -- ids given twice in the batch
for j = 1, n do
  local flat = cjson.decode(ARGV[2 * j])
  local id = flat[2]
  if redis.call('EXISTS', k_job(id)) == 1 or (seen and seen[id]) then return {'duplicate', id} end
  if seen then seen[id] = true end
  flats[j] = flat
end
local head = ARGV[#ARGV]  -- the events envelope's opening, '' when nobody listens
local events = head ~= '' and {} or nil
local out = {}
local stored = false
-- A batch's index writes go in one ZADD per index; one job's go at once (cheaper alone).
local later = n > 1 and new_batch() or nil
for j = 1, n do
  local r = insert_job(flats[j], later)
  if r == false then
    stored = true
    local ev = ARGV[2 * j + 1]
    if events and ev ~= '' then events[#events + 1] = ev end
  end
  out[j] = r
end
flush_index(later)
if stored then wake() end
if events and #events > 0 then
  redis.call('PUBLISH', k_events(), head .. table.concat(events, ',') .. ']}')
end
return out
