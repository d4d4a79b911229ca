"""hyperopt's ``tpe``, ``rand``, ``anneal`` and ``atpe`` as searchers: each ask reads the documents."""

from __future__ import annotations

from typing import Any

from airflow_provider_sparktune.search.base import History, Searcher, doc_vals
from airflow_provider_sparktune.tuning.algorithms import Suggest, algorithm


class HyperoptSearcher(Searcher):
    """One of hyperopt's ``suggest`` functions, asked for one trial id at a time."""

    listens = False  # hyperopt's algorithms read every document themselves, at each ask

    def __init__(self, name: str, suggest: Suggest | None = None) -> None:
        self.name = name
        self.suggest = suggest if suggest is not None else algorithm(name)

    def ask(self, tid: int, history: History, seed: int) -> dict[str, Any]:
        docs = self.suggest([tid], history.domain, history.trials, seed)
        return doc_vals(docs[0])
