"""The caption grammar: two captions per image, with synonyms, varied sentence shapes and word order,
and details left out as annotators do. A colour word always sits right before its garment's noun
(`a red striped jacket`, `a pair of blue jeans`) or right after it (`her skirt is black`).

The vocabulary tables are public: tests parse captions back with them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tasks.data.synth.attributes import Identity
from tasks.data.synth.views import View, visible_slots

# Synonyms for each garment type. The last word of each phrase is the noun a parser looks for.
NOUNS: dict[str, dict[str, tuple[str, ...]]] = {
    "upper": {
        "t-shirt": ("t-shirt", "tee", "short-sleeved shirt", "t-shirt"),
        "shirt": ("shirt", "button-up shirt", "long-sleeved shirt"),
        "jacket": ("jacket", "coat", "jacket"),
        "sweater": ("sweater", "jumper", "pullover"),
        "hoodie": ("hoodie", "hooded sweatshirt", "hoodie"),
    },
    "lower": {
        "trousers": ("trousers", "pants", "slacks"),
        "jeans": ("jeans", "denim jeans"),
        "shorts": ("shorts",),
        "skirt": ("skirt",),
    },
    "shoes": {"shoes": ("shoes", "sneakers", "trainers", "shoes")},
    "bag": {
        "backpack": ("backpack", "rucksack", "backpack"),
        "handbag": ("handbag", "purse", "hand bag"),
        "shoulder bag": ("shoulder bag", "messenger bag", "crossbody bag"),
    },
    "headwear": {"cap": ("cap", "baseball cap"), "hat": ("hat",)},
    "hair": {"hair": ("hair",)},
}
# Canonical colour names as written; synonyms map to the attribute values.
COLOUR_WORDS: dict[str, str] = {
    **{
        c: c
        for c in (
            "black",
            "white",
            "grey",
            "red",
            "blue",
            "green",
            "yellow",
            "purple",
            "pink",
            "brown",
            "blonde",
        )
    },
    "gray": "grey",
    "blond": "blonde",
}
_SPELLINGS: dict[str, tuple[str, ...]] = {"grey": ("grey", "gray"), "blonde": ("blonde", "blond")}
PATTERN_WORDS: dict[str, tuple[str, ...]] = {
    "striped": ("striped", "stripy"),
    "checked": ("checked", "plaid", "checkered"),
    "dotted": ("polka-dot", "dotted", "spotted"),
}
PATTERN_AFTER: dict[str, tuple[str, ...]] = {
    "striped": ("with stripes", "with horizontal stripes"),
    "checked": ("with a check pattern", "with a plaid pattern"),
    "dotted": ("with dots", "with polka dots"),
}
PLURAL_NOUNS = {"trousers", "pants", "slacks", "jeans", "shorts", "shoes", "sneakers", "trainers", "glasses"}
SUBJECTS = {
    "man": ("a man", "the man", "a young man", "this man", "a guy", "a male", "the gentleman"),
    "woman": ("a woman", "the woman", "a young woman", "this woman", "a lady", "a girl", "a female"),
}
NEUTRAL_SUBJECTS = ("a person", "the pedestrian", "this person")


@dataclass(frozen=True)
class Mention:
    """One attribute said in words: `noun` (pattern and type words), `colour` ('' if left out)."""

    slot: str
    noun: str
    colour: str
    plural: bool
    after: str = ""  # words after the noun, e.g. "with stripes"
    before: str = ""  # words before the colour, e.g. "long" in "long black hair"

    def phrase(self, rng: random.Random) -> str:
        """`a red striped jacket`, `a pair of blue jeans`, `white sneakers`, `long black hair`."""
        words = " ".join(w for w in (self.before, self.colour, self.noun, self.after) if w)
        if self.slot == "hair" or self.noun == "glasses":
            return words
        if self.plural:
            return f"a pair of {words}" if rng.random() < 0.3 else words
        return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _colour(name: str, rng: random.Random) -> str:
    return rng.choice(_SPELLINGS.get(name, (name,)))


def mention(slot: str, identity: Identity, rng: random.Random) -> Mention:
    """Realise one visible slot; the colour is dropped 10% of the time, never replaced."""
    keep_colour = rng.random() < 0.9
    if slot == "glasses":
        return Mention(slot, rng.choice(("glasses", "glasses", "sunglasses")), "", plural=True)
    if slot == "hair":
        length = identity.hair_length if identity.hair_length != "medium" else "shoulder-length"
        roll = rng.random()
        colour = _colour(identity.hair_colour, rng) if roll < 0.8 else ""
        before = length if roll < 0.6 or roll >= 0.8 else ""
        return Mention(slot, "hair", colour, plural=False, before=before)
    kind = {"upper": identity.upper_type, "lower": identity.lower_type, "shoes": "shoes",
            "bag": identity.bag_type, "headwear": identity.headwear}[slot]  # fmt: skip
    value = {"upper": identity.upper_colour, "lower": identity.lower_colour, "shoes": identity.shoes_colour,
             "bag": identity.bag_colour, "headwear": identity.headwear_colour}[slot]  # fmt: skip
    noun, after = rng.choice(NOUNS[slot][kind]), ""
    if slot == "upper" and identity.upper_pattern != "plain" and rng.random() < 0.75:
        if rng.random() < 0.6:
            noun = f"{rng.choice(PATTERN_WORDS[identity.upper_pattern])} {noun}"
        else:
            after = rng.choice(PATTERN_AFTER[identity.upper_pattern])
    colour = _colour(value, rng) if keep_colour else ""
    return Mention(slot, noun, colour, plural=noun.split()[-1] in PLURAL_NOUNS, after=after)


def join(items: list[str], rng: random.Random) -> str:
    """`a, b and c` (or with an Oxford comma)."""
    if len(items) <= 1:
        return "".join(items)
    comma = "," if len(items) > 2 and rng.random() < 0.3 else ""
    return f"{', '.join(items[:-1])}{comma} and {items[-1]}"


ORDER = ("hair", "headwear", "glasses", "upper", "lower", "shoes", "bag")
WEAR_VERBS = ("is wearing", "wears", "is dressed in", "has on")
CARRY_VERBS = {
    "backpack": ("is carrying", "carries", "has", "is wearing"),
    "handbag": ("is holding", "is carrying", "holds", "carries"),
    "shoulder bag": ("is carrying", "has", "carries", "is wearing"),
}
CARRY_AFTER = {
    "backpack": ("", "", "on {poss} back"),
    "handbag": ("", "", "in {poss} hand"),
    "shoulder bag": ("", "over {poss} shoulder"),
}


@dataclass(frozen=True)
class Parts:
    """What one caption will say, before a sentence shape is chosen."""

    subject: str
    pron: str  # he / she
    poss: str  # his / her
    hair: Mention | None
    wear: list[Mention]
    bag: Mention | None
    bag_type: str
    view: str  # a predicate such as "is walking away from the camera", or ""


def choose_parts(identity: Identity, view: View, rng: random.Random) -> Parts:
    """Pick ~60-90% of the visible attributes (at least one garment) and realise each one."""
    slots = list(visible_slots(identity, view))
    k = max(2, min(len(slots), round(len(slots) * rng.uniform(0.6, 0.9))))
    chosen = rng.sample(slots, k)
    if not {"upper", "lower", "shoes", "headwear"} & set(chosen):
        chosen.append(rng.choice(("upper", "lower")))
    if rng.random() < 0.7:
        chosen.sort(key=ORDER.index)
    mentions = [mention(s, identity, rng) for s in chosen]
    man = identity.gender == "man"
    subject = rng.choice(NEUTRAL_SUBJECTS if rng.random() < 0.12 else SUBJECTS[identity.gender])
    views = {
        "front": ("is facing the camera", "is walking towards the camera"),
        "back": ("is walking away from the camera", "is seen from behind", "has {poss} back to the camera"),
        "side": ("is walking past", "is seen from the side"),
    }[view.viewpoint]
    return Parts(
        subject=subject,
        pron="he" if man else "she",
        poss="his" if man else "her",
        hair=next((m for m in mentions if m.slot == "hair"), None),
        wear=[m for m in mentions if m.slot not in {"hair", "bag"}],
        bag=next((m for m in mentions if m.slot == "bag"), None),
        bag_type=identity.bag_type,
        view=rng.choice(views).format(poss="his" if man else "her") if rng.random() < 0.25 else "",
    )


def _carry(p: Parts, rng: random.Random, ing: bool = False) -> str:
    assert p.bag is not None
    verb = rng.choice(CARRY_VERBS[p.bag_type])
    if ing:
        verb = {"is carrying": "carrying", "carries": "carrying", "has": "with", "is wearing": "wearing",
                "is holding": "holding", "holds": "holding"}[verb]  # fmt: skip
    after = rng.choice(CARRY_AFTER[p.bag_type]).format(poss=p.poss)
    return " ".join(w for w in (verb, p.bag.phrase(rng), after) if w)


def _wear_list(p: Parts, rng: random.Random) -> str:
    return join([m.phrase(rng) for m in p.wear], rng)


def _one_sentence(p: Parts, rng: random.Random) -> list[str]:
    """A man with short black hair is wearing a red jacket and blue jeans and is carrying a backpack."""
    hair = f" with {p.hair.phrase(rng)}" if p.hair else ""
    bag = f" and {_carry(p, rng)}" if p.bag else ""
    return [f"{p.subject}{hair} {rng.choice(WEAR_VERBS)} {_wear_list(p, rng)}{bag}"] + (
        [f"{p.pron} {p.view}"] if p.view else []
    )


def _short_sentences(p: Parts, rng: random.Random) -> list[str]:
    """The woman wears a white shirt. She has long hair. She carries a red handbag."""
    rest = [f"{p.pron} has {p.hair.phrase(rng)}"] if p.hair else []
    rest += [f"{p.pron} {_carry(p, rng)}"] if p.bag else []
    rest += [f"{p.pron} {p.view}"] if p.view else []
    rng.shuffle(rest)
    return [f"{p.subject} {rng.choice(WEAR_VERBS)} {_wear_list(p, rng)}", *rest]


def _in_phrase(p: Parts, rng: random.Random) -> list[str]:
    """A young woman in a white shirt and a black skirt, carrying a red shoulder bag."""
    tail = [f"with {p.hair.phrase(rng)}"] if p.hair else []
    tail += [_carry(p, rng, ing=True)] if p.bag else []
    rng.shuffle(tail)
    return [", ".join([f"{p.subject} in {_wear_list(p, rng)}", *tail])]


def _who_clause(p: Parts, rng: random.Random) -> list[str]:
    """A man who is carrying a black backpack is wearing a grey coat. He has short hair."""
    if p.bag is None:
        return _one_sentence(p, rng)
    out = [
        f"{p.subject} who {_carry(p, rng).replace('carries', 'is carrying')} {rng.choice(WEAR_VERBS)} {_wear_list(p, rng)}"
    ]
    return out + ([f"{p.pron} has {p.hair.phrase(rng)}"] if p.hair else [])


def _stated(p: Parts, rng: random.Random) -> list[str]:
    """The man is walking. His jacket is red and his jeans are blue. He has short hair."""
    out = [f"{p.subject} {p.view or rng.choice(('is walking', 'is standing', 'is walking down the street'))}"]
    said = []
    for m in p.wear:
        if m.colour and m.noun != "glasses" and rng.random() < 0.7:
            noun = " ".join(w for w in (m.noun, m.after) if w)
            said.append(f"{p.poss} {noun} {'are' if m.plural else 'is'} {m.colour}")
        else:
            said.append(f"{p.pron} {rng.choice(WEAR_VERBS)} {m.phrase(rng)}")
    out += [join(said[i : i + 2], rng) for i in range(0, len(said), 2)]
    out += [f"{p.pron} has {p.hair.phrase(rng)}"] if p.hair else []
    return out + ([f"{p.pron} {_carry(p, rng)}"] if p.bag else [])


SHAPES = (_one_sentence, _short_sentences, _in_phrase, _who_clause, _stated)


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def caption(identity: Identity, view: View, rng: random.Random) -> str:
    """One caption of `identity` as seen in `view`."""
    parts = choose_parts(identity, view, rng)
    sentences = rng.choice(SHAPES)(parts, rng)
    text = ". ".join(_sentence(s) for s in sentences)
    return text if rng.random() < 0.1 else text + "."


def captions_for(identity: Identity, view: View, rng: random.Random, count: int = 2) -> list[str]:
    """`count` different captions of one image."""
    out: list[str] = []
    for _ in range(20 * count):
        text = caption(identity, view, rng)
        if text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def tokens(text: str) -> list[str]:
    """CUHK-PEDES style `processed_tokens`: lower-case words, punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:[-'][a-z0-9]+)*", text.lower())
