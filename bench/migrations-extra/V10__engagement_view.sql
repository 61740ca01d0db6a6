-- A per-member engagement summary for the AI assistant's context window.
CREATE VIEW member_engagement AS
SELECT m.id AS member_id,
       count(DISTINCT a.event_id) AS events_attended,
       count(DISTINCT gm.group_id) AS groups_joined,
       count(DISTINCT n.id) AS notes
FROM members m
LEFT JOIN attendance a ON a.member_id = m.id
LEFT JOIN group_memberships gm ON gm.member_id = m.id
LEFT JOIN pastoral_notes n ON n.member_id = m.id
GROUP BY m.id;

COMMENT ON VIEW member_engagement IS 'engagement counts; refreshed on read; cheap enough for one member at a time';
