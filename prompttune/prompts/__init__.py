"""Prompts: the template grammar, verbalizers, encoding into token ids, demonstrations, label-word search."""
