-- claim: ARGV = prefix, worker_id, limit, now, locked_until, ntopics, topic...
-- Takes up to `limit` due jobs of the topics (claim_due in _lib.lua). Returns flat
-- records.
local topics = {}
for i = 1, tonumber(ARGV[6]) do topics[i] = ARGV[6 + i] end
return claim_due(ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], topics)
