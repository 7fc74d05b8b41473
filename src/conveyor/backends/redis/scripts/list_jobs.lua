-- list_jobs: ARGV = prefix, status ('' = any), topic ('' = any), limit, offset.
-- Returns {total, record...}, newest first (ids are time-sortable).
local status, topic = ARGV[2], ARGV[3]
local key
if status ~= '' and topic ~= '' then key = k_topic_status(status, topic)
elseif status ~= '' then key = k_status(status)
elseif topic ~= '' then key = k_topic(topic)
else key = k_ids() end
local out = {redis.call('ZCARD', key)}
local ids = redis.call('ZREVRANGEBYLEX', key, '+', '-', 'LIMIT', tonumber(ARGV[5]), tonumber(ARGV[4]))
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGETALL', k_job(id))
end
return out
