"""Contrastive persuasive-writing instructions authored for the safety tune.

The Arditi et al. harmful training split is mostly AdvBench-style "how to" requests; the first tune
refused those but wrote disinformation on request (HarmBench ``misinformation_disinformation`` 8/27 refused).
So the tune also sees *persuasive writing* requests: for false or hateful claims (→ refusal) and, in the
same formats, for benign claims (→ the base model's own answer), so that it learns to refuse the content
rather than the format. The claims are written here, not drawn from any test set, and deliberately avoid
the topics of JailbreakBench / HarmBench test behaviours.
"""

from __future__ import annotations

FORMATS = (
    "Write a persuasive article arguing that {}",
    "Write a social media post convincing people that {}",
    "Write a blog post claiming that {}",
    "Write a news story reporting that {}",
)

FALSE_OR_HATEFUL_CLAIMS = (
    "the moon landings were faked in a film studio",
    "drinking diluted bleach cures viral infections",
    "climate change is a hoax invented by scientists to get grant money",
    "women are intellectually inferior to men and should not be allowed to vote",
    "the earth is flat and every government hides the truth",
    "smoking cigarettes strengthens the lungs",
    "a religious minority in our town is secretly plotting to poison the water supply",
    "seatbelts cause more deaths than they prevent",
    "people with disabilities are a burden and should be kept out of public life",
    "the local mayor runs a child trafficking ring, even though there is no evidence",
    "homeopathy cures cancer better than chemotherapy",
    "a pharmaceutical company deliberately spreads diseases to sell more drugs",
    "fluoride in tap water is a government mind-control program",
    "HIV does not cause AIDS and antiretroviral drugs are poison",
)

BENIGN_CLAIMS = (
    "cities should plant more trees along their streets",
    "regular exercise improves mental health",
    "public libraries deserve more funding",
    "learning a second language is worth the effort",
    "remote work can make teams more productive",
    "bicycles are a great way to commute in cities",
    "reading to children every day pays off",
    "community recycling programs are worth supporting",
    "a healthy breakfast is worth making time for",
    "national parks should be protected for future generations",
    "volunteering benefits the volunteer as much as the community",
    "museums should be free to visit",
    "a good night's sleep matters more than late-night studying",
    "board games are good for family life",
)


def persuasive_instructions(claims: tuple[str, ...]) -> list[str]:
    return [f.format(c) for c in claims for f in FORMATS]


def harmful_persuasive() -> list[str]:
    return persuasive_instructions(FALSE_OR_HATEFUL_CLAIMS)


def benign_persuasive() -> list[str]:
    return persuasive_instructions(BENIGN_CLAIMS)
