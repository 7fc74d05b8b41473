-- save_schedule: ARGV = prefix, mode ('save' | 'add'), name, field, value, ...
-- save: insert or replace; keeps the stored created_at, and the stored last_fired_at
-- unless the new one is later. add: insert only; false when the name is taken.
local name = ARGV[3]
local key = k_schedule(name)
local old = to_table(redis.call('HGETALL', key))
if old.name and ARGV[2] == 'add' then return false end
local new = {}
for i = 4, #ARGV, 2 do new[ARGV[i]] = ARGV[i + 1] end
if old.name then
  new.created_at = old.created_at
  if old.last_fired_at and (new.last_fired_at == nil or tonumber(new.last_fired_at) < tonumber(old.last_fired_at)) then
    new.last_fired_at = old.last_fired_at
  end
end
redis.call('DEL', key)
local flat = {}
for f, v in pairs(new) do flat[#flat + 1] = f; flat[#flat + 1] = v end
redis.call('HSET', key, unpack(flat))
redis.call('ZADD', k_schedules(), 0, name)
return redis.call('HGETALL', key)
