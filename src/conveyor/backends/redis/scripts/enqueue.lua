-- enqueue: ARGV = prefix, then per job: its record (a JSON array, the id second:
-- record.encode_job) and its job.scheduled events (JSON objects joined
-- by ',', '' for none); last, the opening of the events envelope ('{"o":<origin>,"e":[',
-- '' for no events).
-- Returns per job: false (stored as given) or the flat record returned in its place;
-- or {'duplicate', id}, nothing stored, when a job id is already stored (ids are
-- unique: checked for the whole batch before anything is written; the client refuses
-- a batch that gives one twice).
-- Only the events of the jobs stored are published (not those of a job whose id or
-- unique key was taken), with the insert; one wake-up for the whole batch.
local n = (#ARGV - 2) / 2
local flats = {}
for j = 1, n do
  local flat = cjson.decode(ARGV[2 * j])
  if redis.call('EXISTS', k_job(flat[2])) == 1 then return {'duplicate', flat[2]} end
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
