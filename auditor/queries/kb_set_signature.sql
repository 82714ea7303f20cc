UPDATE pgarch.recommendations SET index_signature = %(signature)s WHERE recommendation_id = %(recommendation_id)s
