"""The one rule for a model's classes against a target: a class is its (name, label) pair."""

from __future__ import annotations

from octopi.class_match import class_labels, unmatched_classes
from octopi.data.copick_io import ParticleObject
from octopi.models.model_card import ClassInfo


def test_classes_fit_by_name_and_label_in_any_order() -> None:
    model = [
        ClassInfo(name="ribo", label=2, radius_angstrom=150.0),
        ClassInfo(name="apo", label=1, radius_angstrom=60.0),
    ]
    objects = [ParticleObject("apo", 1, 65.0), ParticleObject("ribo", 2, 150.0)]
    assert class_labels(model) == class_labels(objects) == [("apo", 1), ("ribo", 2)]
    assert unmatched_classes(model, objects) == []


def test_a_class_with_another_label_or_missing_does_not_fit() -> None:
    model = [
        ClassInfo(name="apo", label=1, radius_angstrom=60.0),
        ClassInfo(name="ribo", label=2, radius_angstrom=150.0),
        ClassInfo(name="beta", label=3, radius_angstrom=90.0),
    ]
    objects = [ParticleObject("apo", 1, 60.0), ParticleObject("ribo", 3, 150.0)]
    assert unmatched_classes(model, objects) == model[1:]
    assert class_labels(model[:1]) != class_labels([ParticleObject("apo", 2, 60.0)])


def test_segment_refuses_a_project_without_the_model_classes() -> None:
    from types import SimpleNamespace

    import pytest

    from octopi.data.copick_io import CopickDataError
    from octopi.inference.stages import check_classes_in_project

    card = SimpleNamespace(classes=[ClassInfo(name="apo", label=1, radius_angstrom=60.0)])
    check_classes_in_project(card, [ParticleObject("apo", 1, 60.0), ParticleObject("b", 2, 9.0)])
    with pytest.raises(CopickDataError, match=r"model classes apo \(label 1\) are not objects"):
        check_classes_in_project(card, [ParticleObject("apo", 2, 60.0)])
