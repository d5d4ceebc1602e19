"""Regenerate the sample inputs (deterministic): python samples/make_samples.py"""

import json
import random
from pathlib import Path

HERE = Path(__file__).parent
rng = random.Random(7)

products = ["wireless earbuds", "espresso machine", "running shoes", "phone case", "desk lamp",
            "air fryer", "backpack", "mechanical keyboard", "yoga mat", "electric toothbrush",
            "water bottle", "office chair", "smart watch", "blender", "rain jacket", "e-reader",
            "hair dryer", "camping tent", "USB-C charger", "cast iron pan"]
good = ["works exactly as described", "battery lasts for days", "feels solid and well made",
        "arrived two days early", "setup took five minutes", "great value for the price",
        "my daughter loves it", "quieter than my old one", "the color is even nicer in person",
        "customer support answered within an hour"]
bad = ["stopped working after a week", "the strap broke on day two", "smells like burnt plastic",
       "the instructions are useless", "way smaller than the photos suggest",
       "it arrived scratched and missing a screw", "the app keeps disconnecting",
       "returned it the same day", "louder than a lawnmower", "support never replied"]
meh = ["does the job, nothing more", "fine for the price", "shipping was slow but it works",
       "a bit flimsy, but usable", "not sure I would buy it again", "average in every way"]

with open(HERE / "reviews.jsonl", "w") as f:
    for i in range(1, 301):
        product = rng.choice(products)
        mood = rng.choice(["good", "bad", "meh"])
        pool = {"good": good, "bad": bad, "meh": meh}[mood]
        parts = rng.sample(pool, 2)
        stars = {"good": rng.choice([4, 5]), "bad": rng.choice([1, 2]), "meh": 3}[mood]
        text = f"The {product}: {parts[0]}, and {parts[1]}."
        f.write(json.dumps({"id": f"r{i:04d}", "text": text, "metadata": {"stars": stars, "product": product}}) + "\n")

topics = [
    ("the city council", "approved a new cycling lane network", "reduce traffic downtown", "local shop owners worry about parking"),
    ("researchers at a coastal university", "measured a rise in sea surface temperature", "track coral bleaching", "the data covers twenty years"),
    ("a mid-sized software company", "moved its staff to a four-day week", "improve retention", "productivity stayed flat in the first quarter"),
    ("the national weather service", "issued a heat advisory for the weekend", "warn outdoor workers", "cooling centers will open on Saturday"),
    ("a regional hospital", "opened a night clinic for minor injuries", "shorten emergency room waits", "staffing remains the main constraint"),
    ("the school board", "voted to extend the library's opening hours", "support students without quiet space at home", "the cost is covered by a state grant"),
    ("an electric utility", "finished a battery storage site", "smooth out evening demand peaks", "it can power ten thousand homes for four hours"),
    ("a farmers' cooperative", "switched to drip irrigation on most fields", "save water during droughts", "yields rose slightly in the first season"),
]
openers = ["On Tuesday,", "Last month,", "After a long debate,", "In a surprise move,", "This spring,"]
closers = ["Officials said a review will follow next year.", "Critics called the plan too cautious.",
           "Supporters hope other regions copy the idea.", "A public meeting is planned for next week.",
           "The full report is expected in the autumn."]

with open(HERE / "articles.jsonl", "w") as f:
    for i in range(1, 201):
        who, did, why, detail = rng.choice(topics)
        paragraph = (f"{rng.choice(openers)} {who} {did} in an effort to {why}. "
                     f"According to people involved, {detail}. "
                     f"The decision follows months of planning and {rng.randint(2, 40)} public comments. "
                     f"{rng.choice(closers)}")
        f.write(json.dumps({"id": f"a{i:04d}", "prompt": f"Summarize in one sentence:\n\n{paragraph}"}) + "\n")
