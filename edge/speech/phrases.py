"""What the glasses say: short, discreet words a wearer can take in while a conversation goes on.

Every utterance is built from a small, closed set of *fragments* joined by ", " (same face),
"; " (next face) and ": " (after the head count). `all_phrases()` lists them, so the phrase cache
can synthesise each one once at start-up and any description — even for five faces with
positions — is then played from cache with no synthesis on the press-to-speech path.

Wording choices (said to a blind wearer, usually through one earphone):
- "looks …" not "is …": the model reads a face, not a mind.
- neutral → "looks calm": "neutral" is model jargon; "calm" is what a sighted friend would whisper.
- fear → "looks worried": most "fear" faces in conversation are worry or tension, and "scared"
  overstates it; surprise → "looks surprised"; disgust → "looks disgusted".
- unsure → "not sure": short, honest, and never a guessed emotion.
- 5 classes (vision.classes = 5): angry + disgust → "looks annoyed", fear + surprise → "looks startled".
  "upset" was the obvious word but in everyday speech an upset person is close to tears, so it would blur
  the one line the 5 classes keep (sad against angry); "annoyed" covers irritation to anger and distaste,
  and like "worried" it understates rather than alarms. "startled" is what raised brows and wide eyes
  say whether from fright or surprise; "alarmed" overstates a pleasant surprise.
- positions use the clock face taught in orientation-and-mobility training ("at 11 o'clock") and
  distance in whole metres, because half metres are not something a camera estimate can promise.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Literal

from edge.errors import ConfigError
from edge.results import CLASS_SETS, FaceResult, FrameResult, labels_for

Verbosity = Literal["terse", "verbose"]
VERBOSITIES: tuple[str, ...] = ("terse", "verbose")

LABEL_WORDS: dict[str, str] = {
    "angry": "looks angry",
    "disgust": "looks disgusted",
    "fear": "looks worried",
    "happy": "looks happy",
    "sad": "looks sad",
    "surprise": "looks surprised",
    "neutral": "looks calm",
    "angry_disgust": "looks annoyed",
    "fear_surprise": "looks startled",
}
"""Label (of either class set, edge.results.CLASS_SETS) → what is said for a confident face."""

NOW_WORDS: dict[str, str] = {
    "angry": "now angry",
    "disgust": "now disgusted",
    "fear": "now worried",
    "happy": "now smiling",
    "sad": "now sad",
    "surprise": "now surprised",
    "neutral": "now calm",
    "angry_disgust": "now annoyed",
    "fear_surprise": "now startled",
}
"""Continuous mode, one person's expression changed: "now smiling" (the news, not the whole picture)."""

UNSURE = "not sure"
NO_FACE = "no face"
TOO_DARK = "too dark"

MAX_LISTED = 4
"""Faces described one by one; beyond this the rest are counted ("and 2 more"): a wearer cannot
hold more than a handful of items from one utterance, and every extra item delays the next press."""

_COUNT_WORDS = ("", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
_MAX_DISTANCE_M = 5
FACE_SEPARATOR = ", "
ITEM_SEPARATOR = "; "
COUNT_SEPARATOR = ": "


class Status(StrEnum):
    """Everything the app says that is not a description; the value is the spoken phrase."""

    READY = "ready"
    CAMERA_LOST = "camera lost"
    CAMERA_BACK = "camera back"
    TOO_DARK = "too dark"
    OFFLOAD_UNAVAILABLE = "offload unavailable"
    OFFLOAD_BACK = "offload back"
    CONTINUOUS_ON = "continuous on"
    CONTINUOUS_OFF = "continuous off"
    DETAIL_ON = "detail on"
    DETAIL_OFF = "detail off"
    NOTHING_TO_REPEAT = "nothing to repeat"
    BUSY = "still looking"
    LOW_BATTERY = "low battery"
    ERROR = "something went wrong"
    SHUTTING_DOWN = "shutting down"


def _check_verbosity(verbosity: str) -> None:
    if verbosity not in VERBOSITIES:
        raise ConfigError(f"speech verbosity {verbosity!r} is not valid: use one of {', '.join(VERBOSITIES)}")


def expression_phrase(face: FaceResult) -> str:
    """The words for one face's expression: "looks happy", or "not sure" when the model is unsure."""
    if face.unsure:
        return UNSURE
    try:
        return LABEL_WORDS[face.label]
    except KeyError:
        raise ValueError(f"unknown expression label {face.label!r}; expected one of {', '.join(LABEL_WORDS)}") from None


def clock_phrase(clock: int) -> str:
    """ "at 11 o'clock"; values outside 1–12 wrap round the dial (0 and 12 are both ahead)."""
    hour = int(clock) % 12 or 12
    return f"at {hour} o'clock"


def distance_phrase(distance_m: float) -> str | None:
    """Whole metres, or None when the distance is unknown (0, negative, NaN)."""
    if not math.isfinite(distance_m) or distance_m <= 0:
        return None
    if distance_m < 0.7:
        return "very close"
    metres = int(math.floor(distance_m + 0.5))
    if metres > _MAX_DISTANCE_M:
        return "far away"
    return f"about {metres} metre" if metres == 1 else f"about {metres} metres"


def count_phrase(n: int) -> str:
    """ "two people" … "ten people", then "many people"."""
    return f"{_COUNT_WORDS[n]} people" if 2 <= n < len(_COUNT_WORDS) else "many people"


def _more_phrase(n: int) -> str:
    return f"and {_COUNT_WORDS[n]} more" if n < len(_COUNT_WORDS) else "and more"


def face_phrase(face: FaceResult, verbosity: Verbosity = "terse") -> str:
    """One face: terse "looks happy"; verbose "at 11 o'clock, about 2 metres, looks happy"."""
    _check_verbosity(verbosity)
    if verbosity == "terse":
        return expression_phrase(face)
    parts = [clock_phrase(face.position.clock)]
    distance = distance_phrase(face.position.distance_m)
    if distance:
        parts.append(distance)
    parts.append(expression_phrase(face))
    return FACE_SEPARATOR.join(parts)


def describe(result: FrameResult, verbosity: Verbosity = "terse", too_dark: bool = False) -> str:
    """The sentence for one frame, faces left to right.

    terse:   "looks happy" · "two people: looks happy, not sure" · "no face" / "too dark"
    verbose: "two people: at 11 o'clock, about 2 metres, looks happy; at 1 o'clock, not sure"
    """
    _check_verbosity(verbosity)
    faces = sorted(result.faces, key=lambda f: f.position.x)
    if too_dark:  # edge.results.too_dark: nothing readable, whether or not a face was found
        return TOO_DARK
    if not faces:
        return NO_FACE
    if len(faces) == 1:
        return face_phrase(faces[0], verbosity)
    separator = FACE_SEPARATOR if verbosity == "terse" else ITEM_SEPARATOR
    items = [face_phrase(f, verbosity) for f in faces[:MAX_LISTED]]
    if len(faces) > MAX_LISTED:
        items.append(_more_phrase(len(faces) - MAX_LISTED))
    return count_phrase(len(faces)) + COUNT_SEPARATOR + separator.join(items)


class Changes:
    """What continuous mode says, tick by tick, while the pipeline follows each face (track ids):

    - people came or went (the set of ids changed), or nobody is there: the whole description, as a
      press gives it, but only when it differs from the last one said;
    - the same people, and one of them shows another confident expression on `confirm` ticks in a
      row: just that news, "now smiling" (with "at 11 o'clock" first when several people are there);
    - otherwise nothing: a wearer in a conversation hears only what changed.
    A face going to "not sure" is not news: the last confident reading stands."""

    def __init__(self, confirm: int = 2) -> None:
        self.confirm = confirm
        self.reset()

    def reset(self) -> None:
        self._said: dict[int, str | None] = {}
        self._pending: dict[int, tuple[str, int]] = {}
        self._last_text: str | None = None

    def update(self, result: FrameResult, verbosity: Verbosity = "terse", too_dark: bool = False) -> str | None:
        faces = sorted(result.faces, key=lambda f: f.position.x)
        ids = {f.track_id for f in faces}
        if not faces or 0 in ids or ids != set(self._said):
            self._said = {f.track_id: None if f.unsure else f.label for f in faces}
            self._pending = {}
            text = describe(result, verbosity, too_dark=too_dark)
            if text == self._last_text:
                return None
            self._last_text = text
            return text
        news = []
        for face in faces:
            label = None if face.unsure else face.label
            if label is None or label == self._said[face.track_id]:
                self._pending.pop(face.track_id, None)
                continue
            seen = self._pending.get(face.track_id)
            count = seen[1] + 1 if seen is not None and seen[0] == label else 1
            if count < self.confirm:
                self._pending[face.track_id] = (label, count)
                continue
            self._pending.pop(face.track_id, None)
            self._said[face.track_id] = label
            words = NOW_WORDS[label]
            news.append(words if len(faces) == 1 else clock_phrase(face.position.clock) + FACE_SEPARATOR + words)
        if not news:
            return None
        self._last_text = None  # the picture changed: the next whole description is news again
        return ITEM_SEPARATOR.join(news)


def split_fragments(text: str) -> list[str]:
    """Cut an utterance at ": ", "; " and ", " into the fragments `all_phrases` lists."""
    out: list[str] = []
    for part in text.replace(COUNT_SEPARATOR, "\n").replace(ITEM_SEPARATOR, "\n").replace(FACE_SEPARATOR, "\n").split("\n"):
        part = part.strip()
        if part:
            out.append(part)
    return out


def all_phrases(verbosity: Verbosity = "terse", classes: int | None = 7) -> list[str]:
    """Every fragment the app can say at this verbosity and class set (status phrases included), no duplicates.

    Any `describe()` output is these fragments joined, so warming the cache with this list makes
    every press answer from cache. Verbose adds the 12 clock positions and the distance words.
    classes None: the words of every class set (the offload server answers in the one each client asks for).
    """
    _check_verbosity(verbosity)
    labels = [label for n in ([classes] if classes else CLASS_SETS) for label in labels_for(n)]
    phrases: list[str] = [NO_FACE, TOO_DARK, UNSURE, *(LABEL_WORDS[x] for x in labels), *(NOW_WORDS[x] for x in labels)]
    phrases += [count_phrase(n) for n in range(2, len(_COUNT_WORDS) + 1)]
    phrases += [_more_phrase(n) for n in range(1, len(_COUNT_WORDS) + 1)]
    phrases += [clock_phrase(h) for h in range(1, 13)]  # verbose positions, and who changed in a group (Changes)
    if verbosity == "verbose":
        phrases += ["very close", "far away"]
        phrases += [distance_phrase(float(m)) or "" for m in range(1, _MAX_DISTANCE_M + 1)]
    phrases += [s.value for s in Status]
    return list(dict.fromkeys(phrases))
