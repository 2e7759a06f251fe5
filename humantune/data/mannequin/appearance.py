"""What a mannequin looks like (person type, skin, hair, clothes, background) and the caption that says so."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Named colours for clothes; chosen to be far apart in hue/lightness so "a red shirt" is checkable from pixels.
CLOTH_COLORS: dict[str, tuple[int, int, int]] = {
    "red": (200, 32, 36),
    "blue": (36, 72, 200),
    "green": (40, 150, 60),
    "yellow": (236, 204, 44),
    "white": (236, 236, 232),
    "black": (28, 28, 32),
    "orange": (240, 124, 24),
    "purple": (122, 48, 160),
    "pink": (240, 140, 180),
    "gray": (128, 128, 132),
}
JEANS_BLUE = (52, 82, 130)
SKIN_TONES: list[tuple[int, int, int]] = [
    (255, 219, 186), (241, 194, 160), (224, 172, 130), (198, 134, 96), (160, 102, 66), (112, 72, 46), (80, 52, 36),
]
HAIR_COLORS: dict[str, tuple[int, int, int]] = {
    "black": (24, 20, 18), "brown": (92, 58, 32), "blonde": (214, 178, 104), "red": (160, 62, 28), "gray": (160, 160, 160),
}
SHOE_COLORS = [(30, 30, 30), (240, 240, 240), (110, 60, 30), (40, 40, 90)]

PERSON_TYPES = ("man", "woman", "boy", "girl")
TOPS = ("shirt", "t-shirt", "dress")
BOTTOMS = ("trousers", "jeans", "shorts", "skirt")
BACKGROUNDS = ("grass", "street", "indoor", "beach", "sky")
BUILDS = ("slim", "average", "broad")

ACTION_PHRASES = {
    "standing": "standing", "walking": "walking", "running": "running", "waving": "waving",
    "arms_raised": "with arms raised", "sitting": "sitting", "lying_back": "lying", "lying_side": "lying",
    "jumping": "jumping", "dancing": "dancing", "bending": "bending over",
}
BACKGROUND_PHRASES = {
    "grass": "on the grass", "street": "on the street", "indoor": "in a room", "beach": "on the beach",
    "sky": "against the sky",
}


@dataclass
class Appearance:
    person: str
    build: str
    skin: tuple[int, int, int]
    hair_color: str
    hair_long: bool
    top: str
    top_color: str
    bottom: str | None          # None with a dress
    bottom_color: str | None
    shoes: tuple[int, int, int]

    @property
    def child(self) -> bool:
        return self.person in ("boy", "girl")

    def rgb(self, part: str) -> tuple[int, int, int]:
        """Colour of a garment: ``top``, ``bottom``, ``hair``."""
        if part == "top":
            return CLOTH_COLORS[self.top_color]
        if part == "bottom":
            if self.bottom == "jeans":
                return JEANS_BLUE
            return CLOTH_COLORS[self.bottom_color or "gray"]
        if part == "hair":
            return HAIR_COLORS[self.hair_color]
        raise KeyError(part)

    def to_json(self) -> dict:
        d = asdict(self)
        d["skin"] = list(self.skin)
        d["shoes"] = list(self.shoes)
        return d

    def describe(self) -> str:
        """'a woman in a red shirt and blue jeans'."""
        top = f"{self.top_color} {self.top}"
        if self.bottom is None:
            clothes = _article(top)
        elif self.bottom == "jeans":
            clothes = f"{_article(top)} and blue jeans"
        else:
            clothes = f"{_article(top)} and {self.bottom_color} {self.bottom}"
        return f"{_article(self.person)} in {clothes}"


def sample_appearance(rng: np.random.Generator) -> Appearance:
    person = str(rng.choice(PERSON_TYPES, p=[0.36, 0.36, 0.14, 0.14]))
    female = person in ("woman", "girl")
    top = str(rng.choice(TOPS, p=[0.4, 0.35, 0.25] if female else [0.5, 0.5, 0.0]))
    colors = list(CLOTH_COLORS)
    top_color = str(rng.choice(colors))
    if top == "dress":
        bottom, bottom_color = None, None
    else:
        bottom = str(rng.choice(BOTTOMS, p=[0.3, 0.3, 0.2, 0.2] if female else [0.4, 0.35, 0.25, 0.0]))
        bottom_color = None if bottom == "jeans" else str(rng.choice([c for c in colors if c != top_color]))
    hair_options = list(HAIR_COLORS) if person not in ("boy", "girl") else ["black", "brown", "blonde", "red"]
    return Appearance(
        person=person,
        build=str(rng.choice(BUILDS, p=[0.3, 0.5, 0.2])),
        skin=SKIN_TONES[int(rng.integers(len(SKIN_TONES)))],
        hair_color=str(rng.choice(hair_options)),
        hair_long=bool(rng.uniform() < (0.75 if female else 0.08)),
        top=top,
        top_color=top_color,
        bottom=bottom,
        bottom_color=bottom_color,
        shoes=SHOE_COLORS[int(rng.integers(len(SHOE_COLORS)))],
    )


def _article(phrase: str) -> str:
    """'an orange shirt', 'a red shirt'."""
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def compose_caption(people: list[tuple[Appearance, str]], background: str) -> str:
    """Caption from attributes: 'a woman in a red shirt and blue jeans lying on the grass'.

    ``people`` is a list of (appearance, action); a second person joins with 'and'.
    """
    parts = [f"{a.describe()} {ACTION_PHRASES[action]}" for a, action in people]
    return " and ".join(parts) + " " + BACKGROUND_PHRASES[background]
