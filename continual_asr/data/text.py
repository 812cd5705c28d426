"""Sentence source: transcript normalisation, a built-in sentence generator and text files.

The generator is a small context-free grammar over a built-in word list (no download, no
system package), expanded with a seeded ``random.Random`` so the same arguments give the
same sentences on every machine and under any ``PYTHONHASHSEED``.
"""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path

# The letters normalize_text keeps. The tokenizer can always spell them, however few base-task
# sentences it is trained on (a small base need not contain a "z"); digits it spells only if the
# base task's transcripts have them, since digits in a later task alone mean that its corpus
# writes numbers differently ("7" vs "seven"), which is worth an error rather than silent misses.
LETTERS = "abcdefghijklmnopqrstuvwxyz'"
_QUOTES = str.maketrans({c: "'" for c in "\u2018\u2019\u201a\u201b\u2032\u02bc\u0060\u00b4"})
_NOT_KEPT = re.compile(r"[^a-z0-9' ]+")
_LOOSE_APOSTROPHE = re.compile(r"(?<![a-z0-9])'|'(?![a-z0-9])")


def normalize_text(text: str) -> str:
    """The one transcript normalisation used for training targets and for WER.

    Rule: invisible format characters (Unicode Cf: soft hyphens, zero-width joiners) dropped;
    NFKC; lowercase; accents folded (``café`` -> ``cafe``); curly/prime quotes -> ``'``;
    keep only ``a-z``, ``0-9``, spaces and apostrophes that sit *inside* a word (``don't``,
    ``o'clock``); every other character (punctuation, other scripts, leading/trailing
    apostrophes) becomes a space; whitespace is collapsed and the ends stripped.
    """
    text = _NOT_KEPT.sub(" ", _fold(text))
    text = _LOOSE_APOSTROPHE.sub(" ", text)
    return " ".join(text.split())


def _fold(text: str) -> str:
    # Invisible format characters (soft hyphen, zero-width joiner) join what they sit in: dropped,
    # not turned into a space that would split "thr\u00adee" into two words.
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    text = unicodedata.normalize("NFKC", text.translate(_QUOTES)).casefold()  # casefold: "ß" -> "ss"
    # Fold accents so accented Latin letters keep their base letter instead of splitting words.
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def unsupported_characters(text: str) -> list[str]:
    """Letters and digits of ``text`` that :func:`normalize_text` would drop (``ж``, ``ø``, ``中``).

    Punctuation is meant to go, but dropping a letter changes what the transcript says, so a
    recorded corpus with such characters is bad data rather than something to clean silently.
    """
    return sorted({c for c in _fold(text) if c.isalnum() and not ("a" <= c <= "z" or "0" <= c <= "9")})


# --- Word list by part of speech; nouns, adjectives and verbs also by what they go with, so the
# sentences mostly make sense. "kind: words" entries, parsed by _sections(). ----------------
_WORD_LIST = """
person: teacher doctor nurse farmer driver pilot student child man woman boy girl baby friend neighbor mother father
    sister brother uncle aunt cousin son daughter husband wife king queen soldier sailor artist singer dancer writer
    player captain cook baker officer lawyer judge manager worker engineer scientist guest visitor stranger customer
    waiter guard hunter fisherman clerk mayor actor coach dentist
animal: dog cat horse cow pig sheep goat chicken duck goose rabbit mouse fox wolf bear lion tiger elephant monkey
    bird eagle owl fish frog snake turtle bee spider butterfly deer donkey camel whale dolphin shark parrot squirrel
    kitten puppy pony
food: apple banana orange lemon cherry grape peach pear potato tomato onion carrot cake cookie sandwich egg pizza
    pie sausage biscuit melon
clothes: hat coat jacket shirt dress skirt shoe boot sock glove scarf sweater belt uniform
vehicle: bicycle car bus truck train boat ship plane motorbike van
text: letter newspaper magazine notebook book message card map ticket list report poem note
instrument: drum guitar piano violin flute trumpet
container: door window box bag basket bucket bottle jar cupboard drawer gate oven envelope suitcase wallet fridge
object: cup glass plate bowl spoon fork knife pot pan ball toy doll kite bell clock watch ring umbrella key lock
    chair table bed desk lamp mirror shelf sofa carpet blanket pillow towel candle brush wheel engine ladder hammer
    rope chain tool machine computer phone camera radio screen button battery coin stamp gift flower tree leaf
    branch seed plant rose stone shell feather flag sign poster painting statue tent fence pipe sink kettle pencil
    pen picture photo
mass_food: bread butter cheese rice sugar salt pepper honey jam meat chocolate soup pasta
drink: milk water coffee tea juice lemonade
place: kitchen garden park school library office hospital station airport market shop bank church museum beach river
    lake forest mountain hill field farm village town city island valley road street bridge corner hall bedroom
    bathroom classroom theater cinema restaurant hotel cafe bakery factory harbor castle palace zoo stadium yard
    garage playground tunnel cave camp
event: meeting concert party lesson game movie match show class trip race wedding festival exam
abstract: question answer story song plan idea problem dream secret joke result reason word name
name: anna ben carla daniel emma frank grace henry isabel jack kate leo maria nick olivia peter rachel sam tom
    victor wendy alex julia sarah james lucy michael sophie oliver chloe noah mia ethan ella lily jacob hannah ryan
    zoe adam laura martin helen paul simon nina oscar
adj_p: happy sad angry tired hungry busy quiet kind friendly funny brave careful clever calm gentle proud shy lazy
    polite honest patient wise nervous excited surprised worried serious lucky rich poor strong weak young tall
    short old famous lovely nice strange
adj_t: big small large little long old new good bad heavy light dark bright soft hard expensive cheap empty full
    broken clean dirty wet dry hot cold sharp smooth rough thick thin wide narrow round square flat wooden golden
    silver modern ancient perfect useful favorite beautiful ugly strange huge tiny red blue green yellow black white
    brown gray pink purple
adj_f: fresh sweet sour bitter salty hot cold warm delicious cheap expensive big small green red
adj_w: cold hot warm cool dark bright quiet noisy sunny cloudy rainy windy wet dry lovely
degree: very quite really rather too so extremely fairly
frequency: always never often usually sometimes rarely also still
manner: quickly slowly carefully quietly loudly happily sadly easily suddenly together again outside inside home
v_being: see watch find meet help call visit invite thank teach follow join miss love like remember know hear ask
    answer protect feed wake draw paint notice
v_thing: see find lose keep hold carry bring take give buy sell move lift drop check pack send borrow lend order
    share show hide pick collect deliver touch clean wash paint draw use need like want choose
v_make: make build fix break repair paint design; v_open: open close fill lock empty shut
v_wear: wear buy wash fold find choose; v_text: read write send find print sign
v_drive: drive ride park fix wash stop; v_play: play hear tune
v_food: eat cook bake buy sell taste share order prepare cut wash bring want
v_drink: drink pour make order heat spill
iv: arrive sleep wait run walk swim dance laugh cry smile shout rest work travel return stay sit stand fall jump
    listen talk speak win begin stop agree hurry relax study practice sing play cook read write
num: two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen
    nineteen twenty thirty forty fifty sixty seventy eighty ninety
hour: one two three four five six seven eight nine ten eleven twelve
day: monday tuesday wednesday thursday friday saturday sunday
month: january february march april may june july august september october november december
"""
_IRREGULAR = dict(pair.split(":") for pair in """child:children man:men woman:women fisherman:fishermen mouse:mice
    goose:geese sheep:sheep fish:fish deer:deer knife:knives leaf:leaves wolf:wolves shelf:shelves wife:wives
    potato:potatoes tomato:tomatoes see:saw find:found meet:met teach:taught know:knew hear:heard feed:fed wake:woke
    draw:drew lose:lost keep:kept hold:held bring:brought take:took give:gave buy:bought sell:sold drop:dropped
    send:sent lend:lent hide:hid choose:chose make:made build:built break:broke shut:shut wear:wore read:read
    write:wrote drive:drove ride:rode stop:stopped eat:ate cut:cut drink:drank sleep:slept run:ran swim:swam sit:sat
    stand:stood fall:fell speak:spoke win:won begin:began sing:sang""".split())  # irregular plurals and pasts


def _words(block: str) -> list[str]:
    return list(dict.fromkeys(block.split()))  # de-duplicate, keep order (deterministic)


def _sections(text: str) -> list[tuple[str, str]]:
    """("name", "body") of each "name: body" entry (ended by ";" or a line end, an indented line continues it)."""
    entries = [e.split(":", 1) for e in re.sub(r"\n    ", " ", text).replace("\n", ";").split(";") if e.strip()]
    return [(name.strip(), " ".join(body.split())) for name, body in entries]


def _inflect(word: str, suffix: str) -> str:
    """Plural (suffix "s") or past tense (suffix "ed") of a word from the list above."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + ("ies" if suffix == "s" else "ied")
    if suffix == "s":
        return word + ("es" if word.endswith(("s", "x", "z", "ch", "sh")) else "s")
    return word + ("d" if word.endswith("e") else "ed")


# --- Grammar: symbol -> "alternative | alternative | ..."; "{x}" expands symbol x; an empty
# alternative makes a part optional and a repeated one weighs more. --------------------------

_RULES = """
sentence: {subj} {modal} {opt_freq} {vp} {opt_pp} {opt_tf} | {subj} {vp_past} {opt_pp} {opt_tp}
    | {subj} {modal} {iv} {opt_manner} {opt_pp} {opt_tf} | {subj} {iv_past} {opt_manner} {opt_pp} {opt_tp}
    | {modal_q} {subj} {vp} {opt_tf} | did {subj} {vp} {opt_tp} | {wh} {modal_q} {subj} {vp} {opt_tf}
    | {wh} did {subj} {iv} {opt_tp} | what {modal_q} {subj} {v_thing} {opt_pp} | who {vp_past} {opt_tp}
    | {np_p} is {opt_deg} {adj_p} {opt_tn} | {np_t} was {opt_deg} {adj_t} {opt_tp} | {np_t} is {opt_deg} {adj_t}
    | {np_p} was {opt_deg} {adj_p} {opt_tp} | is {np_p} {opt_deg} {adj_p} | i'm {opt_deg} {adj_p} {opt_tn}
    | {np_pl} are {opt_deg} {adj_p} {opt_tn} | {np_pl} were {opt_deg} {adj_p} {opt_tp}
    | the {food_pl} are {opt_deg} {adj_f} | this {mass_food} is {opt_deg} {adj_f}
    | there is a {opt_adj_t} {object} {loc} | there was a {opt_adj_p} {animal} {loc} {opt_tp}
    | there are {num} {opt_adj_t} {object_pl} {loc} | there were {num} {people_pl} {loc} {opt_tp}
    | are there any {food_pl} {loc} | how many {object_pl} did {subj} {v_thing} | please {vp} {opt_pp}
    | don't {vp} {opt_tf} | let's {iv} {opt_pp} {opt_tf} | {s3} {wants} to {vp} {opt_tf}
    | {sother} {want} to {vp} {opt_tf} | i would like to {vp} {opt_pp} | {subj} {vp_past} because {clause}
    | {subj} {iv_past} and {subj} {iv_past} | {subj} {iv_past} but {subj} {modal} {iv} {opt_tf}
    | {tf} {subj} {modal} {vp} | {tp} {subj} {vp_past} | the {event} {starts} at {clock} | it is {clock}
    | {subj} {modal} meet {obj_p} at {clock} {opt_tf} | it's {opt_deg} {adj_w} {loc} {opt_tn}
    | it was {opt_deg} {adj_w} {tp} | {subj} can't {vp} {opt_tn} | {subj} didn't {vp} {opt_tp}
    | {np_t} isn't {opt_deg} {adj_t} | {subj} won't {iv} {opt_tf} | i think {np_p} is {opt_deg} {adj_p}
    | do you know {obj_p} | {subj} told {obj_p} about the {abstract} | {subj} {modal} tell {obj_p} a {abstract}
vp: {v_being} {obj_b} | {v_being} {obj_p} | {v_thing} {obj_t} | {v_thing} {obj_t}
    | {v_thing} {num} {opt_adj_t} {object_pl} | {v_make} {det_o} {opt_adj_t} {object} | {v_make} {det_o} {vehicle}
    | {v_open} {det_o} {opt_adj_t} {container} | {v_wear} {det_o} {opt_adj_t} {clothes}
    | {v_wear} {det_pl} {opt_adj_t} {clothes_pl} | {v_text} {det_o} {opt_adj_t} {text}
    | {v_drive} {det_o} {opt_adj_t} {vehicle} | {v_play} the {instrument} | {v_food} {det_o} {opt_adj_f} {food}
    | {v_food} {num} {food_pl} | {v_food} some {opt_adj_f} {mass_food} | {v_food} the {food_pl}
    | {v_drink} {det_drink} {drink}
subj: {np_p} | {np_p} | {np_pl} | {name} | {name} | i | you | he | she | we | they; s3: {np_p} | {name} | he | she
sother: {np_pl} | i | you | we | they
np_p: {det} {opt_adj_p} {person} | {det} {opt_adj_p} {person} | {det} {opt_adj_p} {animal}
np_pl: {det_pl} {opt_adj_p} {people_pl} | {det_pl} {animal_pl} | {name} and {name}
np_t: {det} {opt_adj_t} {thing} | {det} {mass_food} | {det} {food}
obj_p: {det_o} {opt_adj_p} {person} | {name} | {name} | him | her | them | us | me | {poss} {relative}
obj_b: {det_o} {opt_adj_p} {animal} | {det_pl} {animal_pl} | {det_pl} {people_pl}
obj_t: {det_o} {opt_adj_t} {thing} | {det_o} {opt_adj_t} {thing} | {det_pl} {opt_adj_t} {thing_pl} | it | them
thing: {object} | {object} | {container} | {clothes} | {vehicle} | {text} | {instrument}
thing_pl: {object_pl} | {object_pl} | {container_pl} | {clothes_pl} | {vehicle_pl} | {text_pl}
relative: mother | father | sister | brother | friend | teacher | neighbor | cousin | uncle
det: the | the | the | the | this | that | my | your | his | her | our | their
det_o: a | a | the | the | the | my | your | his | her | our | their | this | that
det_pl: the | the | these | those | my | your | our | their | some
det_drink: some | the | my | your | her | a cup of | a glass of | a bottle of
poss: my | your | his | her | our | their; wh: where | when | why | how; opt_adj_p: | | {adj_p}
opt_adj_t: | | {adj_t}; opt_adj_f: | {adj_f}; opt_deg: | {degree}; opt_freq: | | | {frequency}
opt_manner: | {manner}; opt_tf: | {tf}; opt_tp: | {tp}; opt_tn: | {tn}
opt_pp: | | {loc} | with {obj_p} | for {obj_p}; loc: {lprep} the {opt_adj_t} {place} | {lprep} {poss} {place}
lprep: in | at | near | behind | outside | inside | beside | next to | in front of | across from | on the way to
modal: will | will | can | could | should | must | might | would | may; modal_q: will | can | could | should | would
wants: wants | needs | hopes | plans | likes | tries; want: want | need | hope | plan | like | try
starts: starts | ends | begins | will start | will end | started | ended
clause: {np_p} was {opt_deg} {adj_p} | {np_pl} were {opt_deg} {adj_p} | he was {adj_p} | she was {adj_p}
    | they were {adj_p} | it was {opt_deg} {adj_w} | i was {adj_p} | we were {adj_p}
tf: tomorrow | tonight | soon | later | next {period} | next {day} | on {day} | in {month} | this {part}
    | at {clock} | after {meal} | before {meal} | in {num} minutes | in the {part} | tomorrow {part}
tp: yesterday | last {period} | last {day} | last night | on {day} | in {month} | this {part} | at {clock}
    | after {meal} | {num} {period_pl} ago | yesterday {part} | a long time ago
tn: today | every {part} | every {day} | in the {part} | in {season} | every day | right now | at the moment
    | on {day_pl}
clock: {hour} o'clock | half past {hour} | quarter past {hour} | quarter to {hour} | noon | midnight | {hour} thirty
period: week | month | year | weekend | summer | winter; part: morning | afternoon | evening
period_pl: days | weeks | months | years | hours; season: spring | summer | autumn | winter
meal: breakfast | lunch | dinner | school | work
"""
_GRAMMAR: dict[str, list[str]] = {k: [a.strip() for a in v.split("|")] for k, v in _sections(_RULES)}
_GRAMMAR["vp_past"] = [re.sub(r"\{(v_\w+)\}", r"{\1_past}", t) for t in _GRAMMAR["vp"]]
for _kind, _body in _sections(_WORD_LIST):
    _GRAMMAR[_kind] = _list = _words(_body)
    if _kind in ("person", "animal", "food", "clothes", "vehicle", "text", "instrument", "container", "object"):
        _GRAMMAR["people_pl" if _kind == "person" else _kind + "_pl"] = [_inflect(w, "s") for w in _list]
    elif _kind.startswith("v_") or _kind == "iv":
        _GRAMMAR[_kind + "_past"] = _words(" ".join(_inflect(w, "ed") for w in _list))
_GRAMMAR["day_pl"] = [d + "s" for d in _GRAMMAR["day"]]

_SLOT = re.compile(r"\{(\w+)\}")
_A_BEFORE, _AN_BEFORE = {"one", "useful", "uniform"}, {"honest", "hour"}  # "a uniform", "an honest"
_MIN_WORDS, _MAX_WORDS = 4, 12


def _expand(symbol: str, rng: random.Random) -> str:
    template = rng.choice(_GRAMMAR[symbol])
    return _SLOT.sub(lambda m: _expand(m.group(1), rng), template)


def _fix_articles(words: list[str]) -> list[str]:
    """'a' -> 'an' before a vowel sound (the grammar always writes 'a')."""
    nxt = words[1:] + [""]
    return ["an" if w == "a" and (n[:1] in ("a", "e", "i", "o", "u") and n not in _A_BEFORE or n in _AN_BEFORE)
            else w for w, n in zip(words, nxt)]


def vocabulary() -> set[str]:
    """Every word the generator can emit: literal words of every symbol reachable from a sentence."""
    words, todo, seen = {"an"}, ["sentence"], {"sentence"}
    while todo:
        for alternative in _GRAMMAR[todo.pop()]:
            words.update(_SLOT.sub(" ", alternative).split())
            new = set(_SLOT.findall(alternative)) - seen
            seen |= new
            todo.extend(sorted(new))
    return words


def generate_sentences(count: int, seed: int, exclude: set[str] | None = None) -> list[str]:
    """``count`` unique, normalised sentences of 4-12 words, none of them in ``exclude``.

    Deterministic for a given (count, seed, exclude); ValueError if the grammar cannot produce
    enough new sentences within a bounded number of tries.
    """
    exclude = exclude or set()
    rng = random.Random(seed)
    chosen: dict[str, None] = {}  # insertion-ordered set
    max_tries = 50 * max(count, 0) + 1000
    for _ in range(max_tries):
        if len(chosen) >= count:
            break
        words = _fix_articles(_expand("sentence", rng).split())
        sentence = normalize_text(" ".join(words))
        if _MIN_WORDS <= len(words) <= _MAX_WORDS and sentence not in chosen and sentence not in exclude:
            chosen[sentence] = None
    if len(chosen) < count:
        raise ValueError(f"sentence generator produced only {len(chosen)} of {count} new sentences "
                         f"in {max_tries} tries (too many requested or excluded)")
    return list(chosen)


def read_sentences(path: str | Path) -> list[str]:
    """Normalised sentences of a UTF-8 text file, one per line; blank and '#' lines dropped."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a text file") from None
    sentences = []
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path}: line {number}: not valid UTF-8 ({err.reason} at byte {err.start})") from None
        if text.lstrip("\ufeff \t").startswith("#"):  # tolerate a byte-order mark before a comment
            continue
        text = normalize_text(text)
        if text:
            sentences.append(text)
    if not sentences:
        raise ValueError(f"{path}: no usable sentences")
    return sentences


def distinct_sentences(path: str | Path, count: int) -> list[str]:
    """The distinct usable sentences of the text file ``path``, in file order; ValueError (one
    line, naming the file) when there are fewer than ``count``."""
    pool = list(dict.fromkeys(read_sentences(path)))
    if len(pool) < count:
        raise ValueError(f"{path}: only {len(pool)} distinct usable sentences, the stream needs {count} "
                         "(every task, split and babble pool gets sentences of its own)")
    return pool


def sentence_pool(source: str | Path, count: int, seed: int) -> list[str]:
    """The first ``count`` sentences of a stream's pool for ``source`` ("generator" or a text
    file): a seeded order of distinct sentences whose prefixes agree, so a task that takes
    sentences ``[start, start + n)`` gets the same ones whatever else is drawn after them."""
    if str(source) == "generator":
        return generate_sentences(count, seed)
    pool = distinct_sentences(source, count)
    random.Random(seed).shuffle(pool)
    return pool[:count]
