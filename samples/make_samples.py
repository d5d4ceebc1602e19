"""Regenerate the sample inputs (deterministic): python samples/make_samples.py"""

import csv
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

# Support tickets as a CSV dataset (id,subject,body), to label billing / bug / feature / other.
trng = random.Random(11)
apps = ["the mobile app", "the web dashboard", "the desktop client", "the API", "the browser extension"]
ticket_kinds = {
    "billing": [
        ("Charged twice this month", "I was billed twice for my {plan} plan on the {day}. Please refund one of the charges."),
        ("Invoice shows the wrong company name", "Our invoice for {month} lists our old company name. Can you reissue it?"),
        ("Refund for unused seats", "We removed {n} seats last week but the renewal still charged for all of them."),
        ("Card declined but payment went through", "{app} said my card was declined, yet my bank shows the payment for the {plan} plan."),
        ("How do I switch to annual billing?", "We'd like to move from monthly to annual billing on the {plan} plan. What happens to this month's charge?"),
        ("VAT missing from receipt", "The receipt for {month} has no VAT number on it, which our accountant needs."),
    ],
    "bug": [
        ("Export button does nothing", "In {app}, clicking Export on a report with more than {n} rows does nothing. No error shown."),
        ("Crash when uploading a photo", "{app} crashes every time I attach a photo larger than {n} MB. Started after the last update."),
        ("Login loop on Safari", "After entering my password in {app} I'm sent back to the login page. Works in Chrome."),
        ("Dates shown one day off", "All due dates in {app} are one day earlier than what I entered. My timezone is UTC+{tz}."),
        ("Search returns no results", "Searching for any customer name in {app} returns nothing since {day}, even exact matches."),
        ("Notifications arrive twice", "Every reminder from {app} arrives twice, a minute apart, on all {n} of our devices."),
    ],
    "feature": [
        ("Dark mode please", "Would love a dark mode in {app}, I use it late at night and it's very bright."),
        ("Bulk edit for tags", "It would save us hours if we could edit tags on {n} items at once instead of one by one."),
        ("Export to Google Sheets", "Can you add a direct export to Google Sheets from {app}? We copy data by hand every {day}."),
        ("Two-factor via hardware keys", "Our security team asks for hardware key support (WebAuthn) for all {n} accounts."),
        ("Custom fields on contacts", "We need a couple of custom fields on contacts, e.g. contract end date, in {app}."),
        ("Keyboard shortcuts", "Power users on our team want keyboard shortcuts for the most common actions in {app}."),
    ],
    "other": [
        ("Partnership inquiry", "We run a consultancy with {n} clients using your product and would like to talk about a partnership."),
        ("Where is your office?", "I'd like to send a thank-you card to the support team. What is your postal address?"),
        ("Data retention question", "How long do you keep deleted projects before they are purged? Asking for our compliance review."),
        ("Thanks for the quick help", "Just wanted to say the support agent on {day} solved my problem in minutes. Great service."),
        ("Conference sponsorship", "Would you be interested in sponsoring our meetup in {month}? About {n} attendees expected."),
        ("Student discount?", "I'm a student working on my thesis. Is there a discount on the {plan} plan?"),
    ],
}
plans = ["Starter", "Team", "Business", "Enterprise"]
months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
days = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "1st", "15th", "28th"]

with open(HERE / "tickets.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "subject", "body"])
    for i in range(1, 201):
        kind = trng.choice(sorted(ticket_kinds))
        subject, body = trng.choice(ticket_kinds[kind])
        body = body.format(plan=trng.choice(plans), day=trng.choice(days), month=trng.choice(months),
                           n=trng.randint(2, 50), app=trng.choice(apps), tz=trng.randint(1, 10))
        writer.writerow([f"t{i:04d}", subject, body[0].upper() + body[1:]])
