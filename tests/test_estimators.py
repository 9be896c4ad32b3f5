import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from gaptheory.estimators import MLPTransformer, SAETransformer, SparseCodingTransformer
from gaptheory.instances import make_instance

ESTIMATORS = [SAETransformer(N=4, steps=5, random_state=0), MLPTransformer(N=4, hidden=(8,), steps=5, random_state=0),
              SparseCodingTransformer(N=4, steps=2, random_state=0)]


#: No check is expected to fail: each estimator passes every check of scikit-learn 1.9 that
#: applies to a transformer (the array-API check skips itself unless SCIPY_ARRAY_API is set).
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_clone_pipeline_and_grid_search_select_by_explained_variance():
    X = make_instance(16, 8, 3, 96, seed=0).X
    search = GridSearchCV(make_pipeline(StandardScaler(), SAETransformer(N=16, steps=30, random_state=0)),
                          {"saetransformer__l1_coefficient": [0.0, 10.0]}, cv=2).fit(X)
    # an L1 weight of 10 silences every latent (EV <= 0); no penalty reconstructs: it must win
    assert search.best_params_["saetransformer__l1_coefficient"] == 0.0
    assert clone(search.best_estimator_).get_params()["saetransformer__l1_coefficient"] == 0.0
