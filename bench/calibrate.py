"""Fit the offline model's confidence calibration (``batch_processor/cascade/calibration.json``).

    python -m bench.calibrate [--tweeteval DIR] [--out PATH]

The fit is isotonic, on held-back labelled messages the model was never trained on: the even
rows of GoEmotions' test split and ``support_dev.tsv`` (and TweetEval's val split, if given).
The odd rows and ``support_holdout.tsv`` are left for measuring it: ``python -m bench.quality
--cascade`` prints the reliability table on them. Each message is read alone and inside a
conversation with agent turns (``bench/conversations.py``), as the daemon meets them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from batch_processor.cascade.calibration import CALIBRATION_FILE, fit, reliability, reliability_text
from batch_processor.classifiers import OfflineClassifier
from bench.conversations import conversations
from bench.sentiment_data import DATA_DIR, Example, read_tsv, read_tweeteval

OUT = Path(__file__).parents[1] / "batch_processor" / "cascade" / CALIBRATION_FILE
#: The conversation shapes the fit reads each message in.
SHAPES = ("alone", "thread")


def fitting_set(tweeteval: Path | None) -> list[Example]:
    """The messages the fit is made on (see the module docstring)."""
    rows = read_tsv(DATA_DIR / "goemotions_test.tsv")[::2] + read_tsv(DATA_DIR / "support_dev.tsv")
    if tweeteval is not None:
        rows += read_tweeteval(tweeteval, "val", "tweeteval_val")
    return rows


def measuring_set() -> list[Example]:
    """The messages a fit is measured on: never fitted on."""
    return read_tsv(DATA_DIR / "goemotions_test.tsv")[1::2] + read_tsv(
        DATA_DIR / "support_holdout.tsv"
    )


def sureness(
    classifier: OfflineClassifier, examples: Sequence[Example]
) -> tuple[list[float], list[str], list[bool]]:
    """The offline sentiment's raw sureness, its label and whether it was right, per shape."""
    raw: list[float] = []
    labels: list[str] = []
    right: list[bool] = []
    texts = [e.text for e in examples]
    for shape in SHAPES:
        for example, conversation in zip(examples, conversations(texts, shape), strict=True):
            _, prediction = classifier.assess(conversation, {})
            raw.append(max(prediction.probabilities))
            labels.append(prediction.label)
            right.append(prediction.label == example.sentiment)
    return raw, labels, right


def main(argv: Sequence[str] | None = None) -> int:
    """Fit, print the reliability on the measuring set, write the fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tweeteval", type=Path, help="TweetEval's datasets/sentiment directory")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    classifier = OfflineClassifier()
    raw, labels, right = sureness(classifier, fitting_set(args.tweeteval))
    source = "bench/data: goemotions_test even rows, support_dev" + (
        ", tweeteval val" if args.tweeteval else ""
    )
    calibration = fit(raw, labels, right, source=f"{source}; shapes {', '.join(SHAPES)}")
    print(f"fitted on {len(raw)} readings, labels {', '.join(calibration.knots)}")
    test_raw, test_labels, test_right = sureness(classifier, measuring_set())
    print("\nraw sureness on the measuring set:")
    print(reliability_text(*reliability(test_raw, test_right)))
    print("\ncalibrated on the measuring set:")
    print(
        reliability_text(
            *reliability(
                [calibration(r, label) for r, label in zip(test_raw, test_labels, strict=True)],
                test_right,
            )
        )
    )
    args.out.write_text(json.dumps(calibration.as_dict(), indent=1) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
