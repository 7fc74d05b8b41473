-- enqueue: ARGV = prefix, njobs, then per job: nfields, field, value, ...
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
return out
