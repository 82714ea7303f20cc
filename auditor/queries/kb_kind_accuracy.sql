-- How past recommendations of the same kind, and of the same statement family, turned out once applied.
SELECT count(*) FILTER (WHERE r.kind = %(kind)s AND o.result = 'improved')::integer AS kind_improved,
       count(*) FILTER (WHERE r.kind = %(kind)s)::integer AS kind_verified,
       count(*) FILTER (WHERE r.family = %(family)s AND o.result = 'improved')::integer AS family_improved,
       count(*) FILTER (WHERE r.family = %(family)s)::integer AS family_verified
FROM pgarch.recommendation_outcomes o
JOIN pgarch.recommendations r USING (recommendation_id)
WHERE r.kind = %(kind)s OR r.family = %(family)s
