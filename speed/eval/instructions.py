"""Per-task query instructions in the E5 style (SPEED stage 13).

An instruction-tuned embedder sees `Instruct: {instruction}\\nQuery: {text}` on the query side
(stage 12); documents get no instruction. Symmetric tasks (STS, pair classification, clustering,
classification) have no document side, so every input counts as a query there. The wording is
our own, one line per task, for every task of MTEB(eng, v1) (the 56 datasets, with
CQADupstack's 12 forums listed one by one for those who run them apart) and MTEB(eng, v2);
other tasks fall back to a default for their category (tests keep every configured mteb task
in the table).
"""

from __future__ import annotations

from speed.prompts.families import QUERY_FORMAT

CATEGORY_DEFAULTS: dict[str, str] = {
    "STS": "Retrieve semantically similar text.",
    "Classification": "Classify the given text into one of the categories of this task.",
    "Clustering": "Identify the topic or theme of the given text.",
    "PairClassification": "Retrieve text that says the same thing as the given text.",
    "Reranking": "Given a query, retrieve the candidate passages that are relevant to it.",
    "Retrieval": "Given a search query, retrieve passages that answer it.",
    "Summarization": "Given a news summary, retrieve other summaries with the same meaning.",
}

_STS = CATEGORY_DEFAULTS["STS"]


def _cqa(forum: str) -> str:
    return f"Given a {forum} StackExchange question, retrieve questions that duplicate it."


TASK_INSTRUCTIONS: dict[str, str] = {
    # Classification (12)
    "AmazonCounterfactualClassification": (
        "Decide whether the given Amazon review describes a counterfactual situation."
    ),
    "AmazonPolarityClassification": "Decide if the given Amazon review is positive or negative.",
    "AmazonReviewsClassification": "Predict the star rating of the given Amazon review.",
    "Banking77Classification": "Given a question from an online banking customer, find its intent.",
    "EmotionClassification": (
        "Label the emotion of the given tweet as anger, fear, joy, love, sadness or surprise."
    ),
    "ImdbClassification": "Decide whether the given IMDB movie review is positive or negative.",
    "MassiveIntentClassification": "Given a request to a voice assistant, find the user's intent.",
    "MassiveScenarioClassification": "Given a request to a voice assistant, find its scenario.",
    "MTOPDomainClassification": "Find the domain of the given request to a task assistant.",
    "MTOPIntentClassification": "Find the intent of the given request to a task assistant.",
    "ToxicConversationsClassification": "Decide whether the given comment is toxic or not.",
    "TweetSentimentExtractionClassification": (
        "Label the sentiment of the given tweet as positive, negative or neutral."
    ),
    # Clustering (11)
    "ArxivClusteringP2P": (
        "Find the main and secondary arXiv category of a paper from its title and abstract."
    ),
    "ArxivClusteringS2S": "Find the main and secondary arXiv category of a paper from its title.",
    "BiorxivClusteringP2P": "Find the bioRxiv category of a paper from its title and abstract.",
    "BiorxivClusteringS2S": "Find the bioRxiv category of a paper from its title.",
    "MedrxivClusteringP2P": "Find the medRxiv category of a paper from its title and abstract.",
    "MedrxivClusteringS2S": "Find the medRxiv category of a paper from its title.",
    "RedditClustering": "Find the subreddit topic of a Reddit post from its title.",
    "RedditClusteringP2P": "Find the subreddit topic of a Reddit post from its title and body.",
    "StackExchangeClustering": "Find the StackExchange site of a question from its title.",
    "StackExchangeClusteringP2P": "Find the StackExchange site of a post from its text.",
    "TwentyNewsgroupsClustering": "Find the newsgroup topic of the given news article.",
    # Pair classification (3)
    "SprintDuplicateQuestions": "Retrieve Sprint forum questions that duplicate the given one.",
    "TwitterSemEval2015": "Retrieve tweets that mean the same as the given tweet.",
    "TwitterURLCorpus": "Retrieve tweets that paraphrase the given tweet.",
    # Reranking (4)
    "AskUbuntuDupQuestions": "Retrieve AskUbuntu questions that duplicate the given question.",
    "MindSmallReranking": "Given a user's reading history, retrieve news articles they will read.",
    "SciDocsRR": "Given the title of a scientific paper, retrieve titles of related papers.",
    "StackOverflowDupQuestions": "Retrieve StackOverflow questions that duplicate the given one.",
    # Retrieval (15)
    "ArguAna": "Given an argument, retrieve the argument that counters it.",
    "ClimateFEVER": (
        "Given a claim about climate change, retrieve passages that support or refute it."
    ),
    "CQADupstackRetrieval": (
        "Given a StackExchange question, retrieve questions that duplicate it with its details."
    ),
    "DBPedia": "Given a query, retrieve the DBPedia entities it asks about.",
    "FEVER": "Given a claim, retrieve Wikipedia passages that support or refute it.",
    "FiQA2018": "Given a question about finance, retrieve forum answers that address it.",
    "HotpotQA": "Given a multi-hop question, retrieve Wikipedia passages needed to answer it.",
    "MSMARCO": "Given a web search query, retrieve passages that answer it.",
    "NFCorpus": (
        "Given a question about nutrition or health, retrieve medical documents that answer it."
    ),
    "NQ": "Given a question, retrieve the Wikipedia passages that answer it.",
    "QuoraRetrieval": "Given a Quora question, retrieve questions that ask the same thing.",
    "SCIDOCS": "Given the title of a scientific paper, retrieve abstracts of papers it cites.",
    "SciFact": "Given a scientific claim, retrieve paper abstracts that support or refute it.",
    "Touche2020": "Given a question on a controversial topic, retrieve arguments that answer it.",
    "TRECCOVID": "Given a question about COVID-19, retrieve scientific articles that answer it.",
    # CQADupstack's forums, for runs that list them one by one
    "CQADupstackAndroidRetrieval": _cqa("Android"),
    "CQADupstackEnglishRetrieval": _cqa("English language and usage"),
    "CQADupstackGamingRetrieval": _cqa("gaming"),
    "CQADupstackGisRetrieval": _cqa("geographic information systems"),
    "CQADupstackMathematicaRetrieval": _cqa("Mathematica"),
    "CQADupstackPhysicsRetrieval": _cqa("physics"),
    "CQADupstackProgrammersRetrieval": _cqa("software engineering"),
    "CQADupstackStatsRetrieval": _cqa("statistics"),
    "CQADupstackTexRetrieval": _cqa("TeX and LaTeX"),
    "CQADupstackUnixRetrieval": _cqa("Unix and Linux"),
    "CQADupstackWebmastersRetrieval": _cqa("webmaster"),
    "CQADupstackWordpressRetrieval": _cqa("WordPress"),
    # MTEB(eng, v2): new versions and hard-negative subsets of the tasks above
    "ArXivHierarchicalClusteringP2P": (
        "Find the arXiv category of a paper from its title and abstract."
    ),
    "ArXivHierarchicalClusteringS2S": "Find the arXiv category of a paper from its title.",
    "BiorxivClusteringP2P.v2": "Find the bioRxiv category of a paper from its title and abstract.",
    "MedrxivClusteringP2P.v2": "Find the medRxiv category of a paper from its title and abstract.",
    "MedrxivClusteringS2S.v2": "Find the medRxiv category of a paper from its title.",
    "StackExchangeClustering.v2": "Find the StackExchange site of a question from its title.",
    "StackExchangeClusteringP2P.v2": "Find the StackExchange site of a post from its text.",
    "TwentyNewsgroupsClustering.v2": "Find the newsgroup topic of the given news article.",
    "ClimateFEVERHardNegatives": (
        "Given a claim about climate change, retrieve passages that support or refute it."
    ),
    "FEVERHardNegatives": "Given a claim, retrieve Wikipedia passages that support or refute it.",
    "HotpotQAHardNegatives": (
        "Given a multi-hop question, retrieve Wikipedia passages needed to answer it."
    ),
    "Touche2020Retrieval.v3": (
        "Given a question on a controversial topic, retrieve arguments that answer it."
    ),
    "STS22.v2": _STS,
    "SummEvalSummarization.v2": CATEGORY_DEFAULTS["Summarization"],
    # STS (10): one shared instruction, as in E5
    "BIOSSES": _STS,
    "SICK-R": _STS,
    "STS12": _STS,
    "STS13": _STS,
    "STS14": _STS,
    "STS15": _STS,
    "STS16": _STS,
    "STS17": _STS,
    "STS22": _STS,
    "STSBenchmark": _STS,
    # Summarization (1)
    "SummEval": CATEGORY_DEFAULTS["Summarization"],
}

_GENERIC = "Retrieve text that is relevant to the given text."


def query_instruction(task_name: str, category: str) -> str:
    """The instruction for a task: its own line if known, else its category's default."""
    return TASK_INSTRUCTIONS.get(task_name) or CATEGORY_DEFAULTS.get(category, _GENERIC)


def instruction_prefix(instruction: str, query_format: str = QUERY_FORMAT) -> str:
    """What goes before a query: `query_format` (the model's own, from speed_embedding.json)
    with its instruction filled in and `{query}` cut off its end."""
    if not query_format.endswith("{query}"):
        raise ValueError(f"query format {query_format!r} must end with {{query}}")
    return query_format.removesuffix("{query}").format(instruction=instruction)


def query_prefix(task_name: str, category: str, query_format: str = QUERY_FORMAT) -> str:
    """The full text put before each query of a task, in the model's training format."""
    return instruction_prefix(query_instruction(task_name, category), query_format)
