"""The DataFlow-MM face: the seed's ``VideoAestheticEvaluator`` API and a JSONL ``FileStorage`` stand-in."""
