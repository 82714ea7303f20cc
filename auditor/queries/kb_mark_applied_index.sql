UPDATE pgarch.recommendations SET applied_index = %(index)s WHERE recommendation_id = %(recommendation_id)s
