"""The deterministic corpus the tiny CPU model is pre-trained on.

Everything is generated from word lists and sentence templates, in English and Chinese, so the
tiny model learns every behaviour a Self-Lengthen stage asks of it, with the exact prompts the
stages send (rendered by :mod:`selflengthen.prompts`):

* ``essay``: chat, the user asks for a piece of writing, the assistant writes an essay: an intro,
  body paragraphs (some under ``##`` sub-headings) and one conclusion; every paragraph ends with
  sentence punctuation. 60-400 words (en) / 100-600 characters (zh).
* ``extend``: chat, the user turn is the ``extend`` prompt over a query and a draft (half of an
  essay, as stage 1 sends it, or a whole one, as stage 2 does); the answer keeps the draft's
  pieces in order, inserts new paragraphs between them and ends with one conclusion, 1.5-2.5
  times the draft's length. A stage-2 prefill is a prefix of such an answer.
* ``self_instruct``: chat, the task of ``self_instruct_prompt`` as the user turn, answered by its
  pre-filled example list followed by new instructions, one per label, so a continuation stops at
  the next label.
* ``judge``: chat, the ``judge_suitability`` prompt answered yes for long-writing requests and no
  for short questions and short writing tasks.
* ``rewrite``: chat, the ``length_rewrite`` prompt answered with the request plus the constraint.

No essay repeats a sentence template or any n-gram the checks look for (10 words in English, 13
CJK characters in Chinese): every text is drawn from a fresh shuffle of the templates and verified
with :func:`selflengthen.text.check_text`, and redrawn in the rare case it fails.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Iterator

from selflengthen.config import ChecksConfig, Language
from selflengthen.prompts import packaged_seeds, render_prompt, self_instruct_prompt
from selflengthen.text import check_text, count_words, split_halves

# Share of each kind of example in the stream (by count). Extension-style examples lift the rate at
# which the model lengthens a draft; judge and rewrite answers are short and learned quickly.
MIX = {"essay": 0.32, "extend": 0.36, "self_instruct": 0.10, "judge": 0.12, "rewrite": 0.10}
# Share of each language (Chinese extends less well; English is the default run's language).
LANGUAGE_SHARE = {"en": 0.6, "zh": 0.4}
# Essay length bounds (words for English, characters for Chinese, as count_words counts them).
ESSAY_LENGTH = {"en": (60, 400), "zh": (100, 600)}
# Length of an extension answer relative to its draft.
EXTEND_RATIO = (1.5, 2.5)
# Share of judge questions that should be answered no.
JUDGE_NO_SHARE = 0.35
# Length thresholds the judge is asked about, most often the pipeline's default of 2000.
JUDGE_MIN_WORDS = (2000, 2000, 2000, 1000, 3000, 5000)

_CHECKS = ChecksConfig()
_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Example:
    """One training sequence: ``prompt`` then ``completion`` (the part the model writes).

    ``chat`` examples hold the user message in ``prompt`` and the assistant message in
    ``completion``; raw examples hold plain text (the self-instruct few-shot prompt). ``fields``
    are the parts the prompt was rendered from (query, draft, constraint, ...).
    """

    kind: str
    language: Language
    prompt: str
    completion: str
    chat: bool = True
    fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Lexicon:
    """Word lists and templates of one language. Template fields name slot lists; ``{S}`` is the
    essay's subject, ``{S_cap}`` the same capitalised; a trailing digit (``{abstract2}``) draws a
    second, different value from the same list."""

    language: Language
    sentence_join: str
    subjects: tuple[str, ...]
    slots: dict[str, tuple[str, ...]]
    intro: tuple[str, ...]
    opener: tuple[str, ...]
    body: tuple[str, ...]
    conclusion: tuple[str, ...]
    closing: tuple[str, ...]
    headings: tuple[str, ...]
    instruction: tuple[str, ...]
    short_requests: tuple[str, ...]
    judge_answers: tuple[str, str]
    constraints: tuple[str, ...]
    rewrites: tuple[str, ...]
    numbers: tuple[str, ...] = field(default=())


# --------------------------------------------------------------------------- English

EN = Lexicon(
    language="en",
    sentence_join=" ",
    subjects=(
        "public libraries", "honeybees", "the bicycle", "night trains", "coffee", "green tea",
        "paper money", "mechanical clocks", "lighthouses", "street markets", "river boats",
        "stone bridges", "solar power", "wind farms", "city parks", "old maps", "radio", "photography",
        "small museums", "chess", "folk music", "bread", "rice farming", "ancient forests", "coral reefs",
        "the postal service", "vaccines", "electric cars", "video games", "family bakeries",
        "home gardens", "rainwater", "glass", "sea salt", "silk", "wool", "the printing press",
        "telescopes", "weather forecasts", "public transport",
    ),
    slots={
        "time": (
            "In the early years", "Over the following decades", "By the end of the century",
            "During the long winters", "In the years after the war", "At first", "Later on",
            "In many small towns", "Across the region", "In crowded cities", "For several generations",
            "Within a single decade",
        ),
        "time_short": (
            "as a child", "one cold morning", "many years ago", "last autumn", "on a rainy evening",
            "during a long trip", "in her first year at work", "after a difficult winter",
            "on a school visit", "in his late twenties", "at a village fair", "during a power cut",
        ),
        "agent": (
            "teachers", "farmers", "young families", "local officials", "engineers", "students",
            "shop owners", "doctors", "travellers", "artists", "parents", "scientists",
        ),
        "adj": (
            "curious", "careful", "busy", "patient", "ambitious", "ordinary", "skilled", "tired",
            "hopeful", "independent", "young", "elderly",
        ),
        "verb": (
            "discovered", "questioned", "welcomed", "studied", "improved", "relied on", "argued about",
            "wrote about", "depended on", "celebrated", "rebuilt", "shared",
        ),
        "manner": (
            "with great care", "without much help", "in small steps", "little by little",
            "with surprising speed", "in quiet ways", "at their own pace", "with simple tools",
            "through trial and error", "against many doubts", "with open minds", "in long evenings",
        ),
        "purpose": (
            "to save time", "to help their neighbours", "to earn a better living",
            "to protect their health", "to understand the world", "to solve practical problems",
            "to connect distant places", "to teach the next generation", "to feel less alone",
            "to make daily work easier", "to keep old memories alive", "to find new markets",
        ),
        "result": (
            "life became easier", "prices fell", "new jobs appeared", "old habits slowly faded",
            "people travelled more often", "schools changed their lessons", "markets grew larger",
            "families spent more time together", "the streets grew quieter", "news spread faster",
            "neighbours began to trust each other", "young people stayed at home",
        ),
        "abstract": (
            "freedom", "patience", "curiosity", "trust", "comfort", "progress", "safety", "community",
            "independence", "knowledge", "beauty", "balance",
        ),
        "place": (
            "a small village in the north", "a busy harbour town", "a mountain school",
            "a crowded market street", "an old river port", "a quiet suburb", "a farming valley",
            "a university town", "a fishing village", "a desert oasis", "an island community",
            "a mining town",
        ),
        "name": (
            "Anna", "Tom", "Maria", "David", "Li Wei", "Sara", "Omar", "Helen", "Jonas", "Priya", "Carlos",
            "Ingrid",
        ),
        "person_verb": (
            "first saw", "learned about", "fell in love with", "started to work with", "began to question",
            "wrote a letter about", "came across", "grew tired of",
        ),
        "degree": ("much", "far", "a little", "slightly", "considerably"),
        "comparative": (
            "faster", "slower", "cheaper", "harder", "deeper", "quieter", "stranger", "richer", "simpler",
            "wider",
        ),
        "thing": (
            "a tool", "a habit", "a business", "a hobby", "a tradition", "a machine", "a resource",
            "a pastime", "a craft", "an industry",
        ),
        "feeling": (
            "pride", "nostalgia", "suspicion", "affection", "amusement", "respect", "concern", "delight",
        ),
        "number": ("two", "three", "four", "several", "a few"),
    },
    intro=(
        "Few subjects reveal as much about daily life as {S}.",
        "When people think about {S}, they often picture {place}.",
        "The story of {S} is a story of {abstract} and {abstract2}.",
        "{S_cap} shaped the lives of {adj} {agent} in ways that are easy to overlook.",
        "This essay looks at {S} from {number} different angles.",
        "In {place}, people have long lived with {S}.",
        "Opinions about {S} usually say more about {agent} than about the subject itself.",
        "{time}, {S} interested only a handful of {adj} {agent}.",
        "To understand {S}, we need to return to the time when it first appeared.",
        "For many {agent}, {S} meant {abstract}.",
        "Ask {adj} {agent} about {S} and you will hear stories full of {feeling}.",
        "Behind {S} lies a long history of {abstract}.",
    ),
    opener=(
        "{time}, {adj} {agent} {verb} {S} {manner}.",
        "{time}, {agent} turned to {S} {purpose}.",
        "{time}, debates about {S} grew louder.",
        "{time}, {S} changed quietly in {place}.",
        "Later, {agent} came to see {S} in a new light.",
        "In {place}, for example, {agent} {verb} {S} {purpose}.",
        "{name} still remembers meeting {S} {time_short}.",
        "One of the clearest examples comes from {place}.",
        "Another side of {S} concerns {adj} {agent}.",
        "The role of {agent} deserves a closer look.",
        "{time}, few {agent} paid attention to {S}.",
        "A different picture appears when we follow {adj} {agent}.",
        "Money also played a part in the story of {S}.",
        "{time}, the price of {S} rose sharply.",
        "Not every change around {S} was welcome.",
        "{S_cap} also left a mark on {place}.",
    ),
    body=(
        "As a result, {result}.",
        "Soon {result}, and {result2}.",
        "Not everyone agreed, and some {agent} feared the loss of {abstract}.",
        "Still, {S} brought {abstract} to {adj} {agent}.",
        "{name} once said that {S} taught everyone {abstract}.",
        "The change was {degree} {comparative} than many {agent} had expected.",
        "In {place}, {agent} {verb} {S} {manner}.",
        "{agent_cap} often talked about {S} {purpose}.",
        "{name}, who {person_verb} {S} {time_short}, later became one of its strongest voices.",
        "Some {agent} {verb} it {manner}, while others simply watched.",
        "Records from {place} show that {result}.",
        "It was {thing} for some and {thing2} for others.",
        "Many {adj} {agent} still speak of those days with {feeling}.",
        "The lesson was simple: {abstract} grows where {agent} work together.",
        "Over time, {S} became a symbol of {abstract}.",
        "Critics pointed out that {result}.",
        "{name} {person_verb} {S} {time_short} and never looked back.",
        "Meanwhile, {adj} {agent} {verb} {S} {purpose}.",
        "What had been {thing} slowly turned into {thing2}.",
        "Even today, {agent} in {place} {verb} {S} {manner}.",
        "This gave {agent} a reason {purpose}.",
        "One {adj} observer might say that {result}.",
        "The numbers were small at first, but {result}.",
        "For {name}, this meant {abstract} more than anything else.",
        "Few {agent} could imagine life without {S} after that.",
        "Each new step asked {agent} for more {abstract}.",
        "Visitors from {place} were surprised by how much {S} had changed.",
        "Behind every success stood {adj} {agent} who {verb} {S} {manner}.",
    ),
    conclusion=(
        "In the end, the world of {S} is more than {thing}; it reflects our need for {abstract}.",
        "To sum up, the story of {S} shows how {agent} can turn {abstract} into {abstract2}.",
        "Looking ahead, {agent} will keep finding new uses for {S}.",
        "All in all, the story of {S} reaches far beyond {place}.",
        "In conclusion, the history of {S} is about {abstract} as much as it is about {abstract2}.",
        "Taken together, these stories show that {S} touched the lives of {adj} {agent} everywhere.",
        "Finally, the past of {S} reminds us that {abstract} is built {manner}.",
        "In short, the subject of {S} deserves the attention of {agent} and {agent2} alike.",
    ),
    closing=(
        "That is why {agent} will keep talking about {S}.",
        "The rest of the story of {S} is still being written.",
        "Perhaps that is the real lesson of {S}.",
        "It is a story worth telling to {adj} {agent}.",
        "And that, in the end, is a story of {abstract}.",
        "There is still much to look forward to.",
    ),
    headings=(
        "Early Beginnings", "A Slow Start", "Years of Change", "Everyday Life", "Voices from the Past",
        "Practical Lessons", "Challenges and Doubts", "The Wider Picture", "A Closer Look", "Hidden Costs",
        "Small Victories", "The People Behind It", "Looking Back", "New Directions", "What Changed",
        "Lessons for Today", "An Unexpected Turn", "Roots and Traditions", "The Modern Era",
        "Local Stories", "Open Questions", "A Personal View", "Between Past and Future", "Quiet Progress",
        "Common Mistakes", "Why It Matters", "The Role of Science", "A Day in the Life", "Old and New",
        "Growing Pains", "The Turning Point", "Shared Memories", "Simple Steps", "Everyday Heroes",
        "Tools and Skills", "A Fragile Balance",
    ),
    instruction=(
        "Write a {ilength} {genre} about {topic}{tail}.",
        "Please write a {ilength} {genre} on {topic}{tail}.",
        "Compose a {ilength} {genre} exploring {topic}{tail}.",
        "Write an essay that explains {topic}{tail}.",
        "Draft a {ilength} {genre} describing {topic}{tail}.",
        "Create a {ilength} {genre} about {topic}{tail}.",
        "Prepare a {ilength} {genre} on {topic}{tail}.",
        "Write a {ilength} {genre} that looks at {topic}{tail}.",
    ),
    short_requests=(
        "What is the capital of {country}?",
        "How many days are there in a leap year?",
        "Translate the word '{word}' into French.",
        "Give one synonym for '{word}'.",
        "Is {digit} an even number?",
        "Write one sentence about {S}.",
        "Write a short slogan for {S}.",
        "Name three colours of the rainbow.",
        "What is {digit} plus {digit2}?",
        "Spell the word '{word}' backwards.",
        "Reply with one word: do you like {S}?",
        "Write a two-line poem about {S}.",
        "Give a title for a blog post about {S}.",
        "Which is larger, {digit} or {digit2}?",
    ),
    judge_answers=("yes", "no"),
    constraints=(
        "about {n} words",
        "between {a} and {b} words",
        "more than {a} words",
        "less than {b} words",
        "at least {a} words",
        "no more than {b} words",
        "roughly {n} words",
    ),
    rewrites=(
        "{query} The answer should be {constraint}.",
        "{query_open}, in {constraint}.",
        "{query} The text should be {constraint} long.",
        "{query} Please write {constraint}.",
        "{query_open}. Use {constraint}.",
    ),
    numbers=("1000", "2000", "3000", "4000", "5000", "6000", "7000", "8000", "10000"),
)

_EN_INSTRUCTION_SLOTS = {
    "ilength": (
        "detailed", "long", "in-depth", "comprehensive", "thorough", "extensive", "well-structured",
        "vivid", "thoughtful", "complete",
    ),
    "genre": (
        "essay", "report", "guide", "article", "story", "letter", "analysis", "history", "feature article",
        "travel narrative", "speech", "review", "blog post", "memoir",
    ),
    "topic": (
        "the history of {S}",
        "the future of {S}",
        "the hidden costs of {S}",
        "the role of {S} in {domain}",
        "how {S} changed {domain}",
        "the science behind {S}",
        "common myths about {S}",
        "the people who depend on {S}",
        "the lessons we can learn from {S}",
        "the rise and fall of {S}",
        "the debate about {S}",
        "a year spent with {S}",
        "{S} and {domain}",
        "the beauty of {S}",
        "what {S} can teach us about {domain}",
    ),
    "domain": (
        "daily life", "city life", "family life", "the way people work", "small towns", "modern schools",
        "world trade", "the way people travel", "local culture", "public health", "the news", "childhood",
        "the environment", "friendship",
    ),
    "tail": (
        "",
        "",
        "",
        "",
        " for high-school students",
        " with practical examples",
        " for a general audience",
        ", drawing on real examples",
        ", written for curious beginners",
        " from the point of view of {agent}",
        ", with suggestions for {agent}",
        " and its lessons for today",
        ", with a clear structure",
    ),
    "country": ("France", "Japan", "Kenya", "Peru", "Canada", "Norway", "Egypt", "India", "Chile", "Spain"),
    "word": ("happy", "river", "quick", "bread", "window", "bright", "garden", "silent", "friend", "cold"),
    "digit": ("7", "12", "35", "48", "91", "104", "256", "19", "63", "8"),
}

# --------------------------------------------------------------------------- Chinese

ZH = Lexicon(
    language="zh",
    sentence_join="",
    subjects=(
        "造纸术", "公共图书馆", "自行车", "绿茶", "蜜蜂", "夜班火车", "咖啡", "纸币", "机械钟", "灯塔",
        "街头集市", "石桥", "太阳能", "风力发电", "城市公园", "旧地图", "收音机", "摄影", "小博物馆",
        "象棋", "民间音乐", "馒头", "水稻种植", "原始森林", "珊瑚礁", "邮政", "疫苗", "电动汽车",
        "电子游戏", "家庭面包店", "家庭菜园", "雨水", "玻璃", "海盐", "丝绸", "羊毛", "印刷术", "望远镜",
        "天气预报", "公共交通",
    ),
    slots={
        "time": (
            "在早期", "几十年后", "到了世纪末", "在漫长的冬天里", "在战后的岁月里", "起初", "后来",
            "在许多小镇上", "在整个地区", "在拥挤的城市里", "几代人以来", "短短十年间",
        ),
        "time_short": (
            "小时候", "一个寒冷的早晨", "很多年前", "去年秋天", "一个下雨的傍晚", "一次长途旅行中",
            "工作的第一年", "一个艰难的冬天过后", "一次学校参观时", "二十多岁时", "一次乡村集会上",
            "一次停电时",
        ),
        "agent": (
            "老师", "农民", "年轻家庭", "地方官员", "工程师", "学生", "店主", "医生", "旅行者", "艺术家",
            "父母", "科学家",
        ),
        "adj": (
            "好奇的", "细心的", "忙碌的", "耐心的", "有抱负的", "普通的", "熟练的", "疲惫的", "充满希望的",
            "独立的", "年轻的", "年长的",
        ),
        "verb": (
            "发现了", "质疑过", "欢迎", "研究", "改进了", "依靠", "争论", "描写", "依赖", "庆祝", "重建了",
            "分享",
        ),
        "manner": (
            "小心翼翼地", "几乎没有帮手地", "一步一步地", "一点一点地", "以惊人的速度", "悄悄地",
            "按照自己的节奏", "用简单的工具", "通过反复尝试", "不顾许多怀疑", "怀着开放的心态",
            "在漫长的夜晚里",
        ),
        "purpose": (
            "为了节省时间", "为了帮助邻居", "为了过上更好的生活", "为了保护健康", "为了理解世界",
            "为了解决实际问题", "为了连接遥远的地方", "为了教育下一代", "为了不再感到孤独",
            "为了让日常工作更轻松", "为了留住过去的记忆", "为了寻找新的市场",
        ),
        "result": (
            "生活变得更加方便", "物价下降了", "新的工作岗位出现了", "旧习惯慢慢消失了", "人们出行更频繁了",
            "学校改变了课程", "市场越来越大", "家人有了更多相处的时间", "街道变得安静了",
            "消息传播得更快了", "邻居之间开始互相信任", "年轻人留在了家乡",
        ),
        "abstract": (
            "自由", "耐心", "好奇心", "信任", "舒适", "进步", "安全", "团结", "独立", "知识", "美", "平衡",
        ),
        "place": (
            "北方的一个小村庄", "繁忙的港口小镇", "山里的一所学校", "拥挤的集市街道", "古老的河港",
            "安静的郊区", "种田的山谷", "一座大学城", "一个渔村", "沙漠里的绿洲", "一个海岛社区",
            "一座矿业小镇",
        ),
        "name": (
            "小李", "王老师", "陈阿姨", "张师傅", "林先生", "刘奶奶", "小周", "赵医生", "孙大爷", "小何",
            "吴姐", "郑教授",
        ),
        "person_verb": ("第一次见到", "开始了解", "爱上了", "开始接触", "开始怀疑", "写信谈起", "偶然遇到", "厌倦了"),
        "degree": ("更加", "远远", "稍微", "明显", "格外"),
        "comparative": ("迅速", "缓慢", "便宜", "艰难", "深刻", "安静", "奇特", "丰富", "简单", "广泛"),
        "thing": ("一种工具", "一种习惯", "一门生意", "一种爱好", "一种传统", "一台机器", "一种资源", "一种消遣", "一门手艺", "一个行业"),
        "feeling": ("自豪", "怀念", "怀疑", "喜爱", "好笑", "敬意", "担忧", "欣喜"),
        "number": ("两个", "三个", "四个", "几个"),
    },
    intro=(
        "说起{S}，很多人首先想到的是{place}。",
        "{S}的故事，其实是一段关于{abstract}和{abstract2}的故事。",
        "{S}以不易察觉的方式，改变了{adj}{agent}的生活。",
        "很少有哪个话题像{S}一样，能让人看清日常生活的变化。",
        "本文将从{number}不同的角度来谈谈{S}。",
        "在{place}，{S}早已成为生活的一部分。",
        "人们对{S}的看法，往往和{agent}的经历有关。",
        "{time}，{S}还只是少数{agent}关心的话题。",
        "要理解{S}，需要先回到它最初出现的年代。",
        "对许多{agent}来说，{S}意味着{abstract}。",
        "问问{adj}{agent}对{S}的看法，你会听到许多充满{feeling}的故事。",
        "{S}的背后，是一段关于{abstract}的漫长历史。",
    ),
    opener=(
        "{time}，{adj}{agent}{manner}{verb}{S}。",
        "{time}，{agent}开始借助{S}，{purpose}。",
        "{time}，关于{S}的争论越来越多。",
        "{time}，{S}在{place}悄悄发生了变化。",
        "后来，{agent}对{S}有了新的认识。",
        "以{place}为例，{agent}{purpose}，{manner}{verb}{S}。",
        "{name}还记得{time_short}第一次见到{S}的情景。",
        "最清楚的例子来自{place}。",
        "{S}的另一面，与{adj}{agent}有关。",
        "{agent}在其中的作用值得细看。",
        "{time}，很少有{agent}关注{S}。",
        "跟着{adj}{agent}的脚步，会看到另一番景象。",
        "金钱在{S}的故事里也扮演了角色。",
        "{time}，{S}的价格大幅上涨。",
        "围绕{S}的变化，并不都受人欢迎。",
        "{S}也在{place}留下了印记。",
    ),
    body=(
        "结果，{result}。",
        "很快，{result}，{result2}。",
        "并不是所有人都赞同，一些{agent}担心会失去{abstract}。",
        "尽管如此，{S}还是给{adj}{agent}带来了{abstract}。",
        "{name}曾经说过，{S}教会了自己{abstract}。",
        "这种变化比许多{agent}预想的还要{degree}{comparative}。",
        "在{place}，{agent}{manner}{verb}{S}。",
        "{agent}常常谈起{S}，{purpose}。",
        "{name}{time_short}{person_verb}{S}，后来成了它最坚定的支持者。",
        "一些{agent}{manner}{verb}它，另一些人只是在旁观看。",
        "来自{place}的记录显示，{result}。",
        "对有些人来说它是{thing}，对另一些人来说它是{thing2}。",
        "许多{adj}{agent}至今说起那段日子，仍带着{feeling}。",
        "道理很简单：{agent}齐心协力的地方，{abstract}就会生长。",
        "久而久之，{S}成了{abstract}的象征。",
        "批评者指出，{result}。",
        "{name}{time_short}{person_verb}{S}，从此再没有回头。",
        "与此同时，{adj}{agent}{purpose}，{manner}{verb}{S}。",
        "原本只是{thing}，后来慢慢变成了{thing2}。",
        "直到今天，{place}的{agent}仍然{manner}{verb}{S}。",
        "这给了{agent}一个理由，{purpose}。",
        "细心的观察者会说，{result}。",
        "起初数字并不大，但是{result}。",
        "对{name}来说，这首先意味着{abstract}。",
        "从那以后，很少有{agent}能想象没有{S}的生活。",
        "每向前一步，都需要{agent}付出更多的{abstract}。",
        "从{place}来的客人，惊讶于{S}的巨大变化。",
        "每一次成功的背后，都有{adj}{agent}{manner}{verb}{S}。",
    ),
    conclusion=(
        "总之，{S}不仅仅是{thing}，它还折射出人们对{abstract}的渴望。",
        "总而言之，{S}告诉我们，{agent}可以把{abstract}变成{abstract2}。",
        "展望未来，{agent}还会为{S}找到新的用途。",
        "回头来看，{S}的意义远远超出了{place}。",
        "归根结底，{S}关乎{abstract}，也关乎{abstract2}。",
        "由此可见，{S}与{adj}{agent}的生活息息相关。",
        "最后，{S}提醒我们，{abstract}是{manner}积累起来的。",
        "简而言之，{S}值得{agent}和{agent2}共同关注。",
    ),
    closing=(
        "这也正是{agent}至今仍在谈论{S}的原因。",
        "{S}的故事，还在继续书写。",
        "或许，这就是{S}给我们的真正启示。",
        "这是一个值得讲给{adj}{agent}听的故事。",
        "说到底，这是一个关于{abstract}的故事。",
        "未来还有更多值得期待的地方。",
    ),
    headings=(
        "早期的萌芽", "缓慢的起步", "变化的年代", "日常生活", "来自过去的声音", "实用的经验", "挑战与怀疑",
        "更大的图景", "细看其中", "隐藏的代价", "小小的胜利", "背后的人们", "回望来路", "新的方向",
        "发生了什么变化", "今天的启示", "意外的转折", "根与传统", "现代时期", "地方故事", "悬而未决的问题",
        "个人的看法", "在过去与未来之间", "静悄悄的进步", "常见的误区", "为什么重要", "科学的作用",
        "平凡的一天", "新与旧", "成长的烦恼", "转折点", "共同的记忆", "简单的步骤", "身边的英雄",
        "工具与手艺", "脆弱的平衡",
    ),
    instruction=(
        "请写一篇{ilength}的{genre}，{topic}{tail}。",
        "请以{S}为主题，写一篇{ilength}的{genre}{tail}。",
        "写一篇{genre}，{topic}{tail}。",
        "请撰写一篇{ilength}的{genre}，{topic}{tail}。",
        "请围绕{S}写一篇{genre}，{topic}{tail}。",
        "请写一份{ilength}的{genre}，{topic}{tail}。",
    ),
    short_requests=(
        "{country}的首都是哪里？",
        "一年有多少天？",
        "把“{word}”翻译成英文。",
        "用一个词形容{S}。",
        "{digit}是偶数吗？",
        "写一句关于{S}的话。",
        "为{S}写一句口号。",
        "说出彩虹的三种颜色。",
        "{digit}加{digit2}等于多少？",
        "用一个字回答：你喜欢{S}吗？",
        "写两句关于{S}的诗。",
        "给一篇关于{S}的博客起个标题。",
        "{digit}和{digit2}哪个大？",
    ),
    judge_answers=("是", "否"),
    constraints=(
        "大约{n}字",
        "{a}字至{b}字",
        "大于{a}字",
        "小于{b}字",
        "约{n}字",
        "{n}字左右",
        "{a}到{b}字之间",
        "不少于{a}字",
        "不超过{b}字",
    ),
    rewrites=(
        "{query_open}，要求字数{constraint}。",
        "{query_open}，全文{constraint}。",
        "{query_open}，篇幅{constraint}。",
        "{query_open}（{constraint}）。",
        "{query}要求字数{constraint}。",
    ),
    numbers=("1000", "2000", "3000", "4000", "5000", "6000", "一千", "两千", "三千", "四千", "五千", "六千", "八千", "一万"),
)

_ZH_INSTRUCTION_SLOTS = {
    "ilength": ("详细", "深入", "全面", "生动", "完整", "长篇", "有条理"),
    "genre": ("文章", "报告", "指南", "故事", "散文", "评论", "书信", "演讲稿", "游记", "分析", "回忆录"),
    "topic": (
        "介绍{S}的历史",
        "探讨{S}的未来",
        "分析{S}对{domain}的影响",
        "讲述{S}如何改变了{domain}",
        "说明{S}背后的科学原理",
        "回顾{S}在{place}的发展",
        "谈谈{agent}眼中的{S}",
        "澄清关于{S}的常见误解",
        "总结我们能从{S}中学到什么",
        "描写与{S}有关的一年",
        "讨论围绕{S}的争议",
        "赞美{S}之美",
    ),
    "domain": (
                   "日常生活", "城市生活", "家庭生活", "人们的工作方式", "小城镇", "现代学校", "世界贸易",
                   "人们的出行方式", "地方文化", "公共卫生", "新闻传播", "童年", "环境", "友谊",
               ),
    "tail": (
                 "",
                 "",
                 "",
                 "",
                 "，并给出实用的建议",
                 "，适合中学生阅读",
                 "，结合具体的例子",
                 "，面向普通读者",
                 "，结构要清晰",
                 "，从{agent}的角度来写",
                 "，并谈谈对今天的启示",
             ),
    "country": ("法国", "日本", "肯尼亚", "秘鲁", "加拿大", "挪威", "埃及", "印度", "智利", "西班牙"),
    "word": ("快乐", "河流", "面包", "窗户", "明亮", "花园", "安静", "朋友", "寒冷", "早上好"),
    "digit": ("7", "12", "35", "48", "91", "104", "256", "19", "63", "8"),
}

LEXICONS = {"en": EN, "zh": ZH}
_SLOTS = {"en": {**EN.slots, **_EN_INSTRUCTION_SLOTS}, "zh": {**ZH.slots, **_ZH_INSTRUCTION_SLOTS}}


# --------------------------------------------------------------------------- filling templates


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def fill(template: str, rng: random.Random, lexicon: Lexicon, subject: str) -> str:
    """Fill every field of ``template``; nested fields in slot values are filled too."""
    slots = _SLOTS[lexicon.language]
    values: dict[str, str] = {"S": subject, "S_cap": _capitalise(subject)}
    for _, name, _, _ in _FORMATTER.parse(template):
        if not name or name in values:
            continue
        base = name.rstrip("0123456789")
        capital = base.endswith("_cap")
        base = base.removesuffix("_cap")
        taken = {values[other] for other in values if other.rstrip("0123456789") == base}
        choices = [value for value in slots[base] if value not in taken]
        value = fill(rng.choice(choices), rng, lexicon, subject)
        values[name] = _capitalise(value) if capital else value
    return template.format(**values)


class _Deck:
    """Templates dealt without replacement (reshuffled when exhausted), so a text rarely repeats one."""

    def __init__(self, templates: tuple[str, ...], rng: random.Random):
        self._templates = templates
        self._rng = rng
        self._cards: list[str] = []

    def deal(self) -> str:
        if not self._cards:
            self._cards = list(self._templates)
            self._rng.shuffle(self._cards)
        return self._cards.pop()


class Writer:
    """Writes the pieces of essays on one subject; one Writer serves an essay and its extensions,
    so their sentences come from one deal of the templates."""

    def __init__(self, rng: random.Random, lexicon: Lexicon, subject: str):
        self.rng = rng
        self.lexicon = lexicon
        self.subject = subject
        self._decks = {
            kind: _Deck(getattr(lexicon, kind), rng)
            for kind in ("intro", "opener", "body", "conclusion", "closing", "headings")
        }

    def _sentence(self, kind: str) -> str:
        return fill(self._decks[kind].deal(), self.rng, self.lexicon, self.subject)

    def _paragraph(self, first: str, more: str, count: int) -> str:
        sentences = [self._sentence(first)] + [self._sentence(more) for _ in range(count - 1)]
        return self.lexicon.sentence_join.join(sentences)

    def intro(self) -> str:
        return self._paragraph("intro", "body", self.rng.randint(2, 3))

    def body(self, heading: bool) -> str:
        """A body paragraph, optionally under a sub-heading (one piece each, blank-line separated)."""
        paragraph = self._paragraph("opener", "body", self.rng.randint(2, 3))
        return f"## {self._decks['headings'].deal()}\n\n{paragraph}" if heading else paragraph

    def conclusion(self) -> str:
        return self._paragraph("conclusion", "closing", self.rng.randint(1, 2))


def _join(blocks: list[str]) -> str:
    return "\n\n".join(blocks)


def _passes(text: str, language: Language) -> bool:
    return check_text(text, _CHECKS.for_language(language)) is None


# --------------------------------------------------------------------------- texts


def instruction(rng: random.Random, language: Language, subject: str) -> str:
    """A request for a long piece of writing about ``subject``."""
    lexicon = LEXICONS[language]
    return fill(rng.choice(lexicon.instruction), rng, lexicon, subject)


def essay_blocks(writer: Writer, bodies: int, headings: bool) -> list[str]:
    """Intro, ``bodies`` body blocks (under sub-headings when ``headings``), conclusion."""
    return [writer.intro(), *(writer.body(headings) for _ in range(bodies)), writer.conclusion()]


def _essay_shape(rng: random.Random, max_bodies: int) -> tuple[int, bool]:
    """How many body blocks, and whether they have sub-headings."""
    return rng.randint(1, max_bodies), rng.random() < 0.35


def essay(rng: random.Random, language: Language, subject: str) -> str:
    """An essay within ESSAY_LENGTH that passes the checks."""
    low, high = ESSAY_LENGTH[language]
    while True:
        bodies, headings = _essay_shape(rng, 4)
        text = _join(essay_blocks(Writer(rng, LEXICONS[language], subject), bodies, headings))
        if low <= count_words(text) <= high and _passes(text, language):
            return text


def extension(writer: Writer, draft: str, complete: bool, rng: random.Random) -> str:
    """A longer rewrite of ``draft``: its blocks in order with new body blocks inserted after the
    intro or any block, ending with one conclusion (the draft's own when ``complete``)."""
    blocks = _draft_blocks(draft)
    conclusion = blocks.pop() if complete else writer.conclusion()
    headings = any(block.startswith("## ") for block in blocks) or rng.random() < 0.3
    target_length = rng.uniform(*EXTEND_RATIO) * count_words(draft)
    slots: list[list[str]] = [[] for _ in blocks]  # new blocks inserted after blocks[i]
    while count_words(_join(blocks + [conclusion] + [b for s in slots for b in s])) < target_length:
        where = rng.randrange(len(blocks))
        # after a sub-heading whose paragraph the half-way split cut off, the new paragraph fills in
        slots[where].append(writer.body(headings and not _bare_heading(blocks[where])))
    merged = [piece for block, new in zip(blocks, slots) for piece in (block, *new)]
    return _join(merged + [conclusion])


def _bare_heading(block: str) -> bool:
    return block.startswith("## ") and "\n\n" not in block


def _draft_blocks(draft: str) -> list[str]:
    """The draft's blocks: paragraphs, each with the sub-heading line before it."""
    blocks: list[str] = []
    pending = ""
    for piece in draft.split("\n\n"):
        if piece.startswith("## "):
            pending = piece
            continue
        blocks.append(f"{pending}\n\n{piece}" if pending else piece)
        pending = ""
    if pending:
        blocks.append(pending)
    return blocks


# --------------------------------------------------------------------------- examples


def essay_example(rng: random.Random, language: Language) -> Example:
    subject = rng.choice(LEXICONS[language].subjects)
    query = instruction(rng, language, subject)
    return Example("essay", language, query, essay(rng, language, subject), fields={"query": query})


def extend_example(rng: random.Random, language: Language) -> Example:
    """Stage 1 (draft = the first half of an essay) or stage 2 (draft = the whole essay)."""
    lexicon = LEXICONS[language]
    subject = rng.choice(lexicon.subjects)
    query = instruction(rng, language, subject)
    while True:
        writer = Writer(rng, lexicon, subject)
        bodies, headings = _essay_shape(rng, 3)
        original = _join(essay_blocks(writer, bodies, headings))
        complete = rng.random() < 0.5
        draft = original if complete else split_halves(original)[0]
        target = extension(writer, draft, complete, rng)
        if _passes(original, language) and _passes(target, language):
            prompt = render_prompt("extend", language, query=query, response=draft)
            return Example("extend", language, prompt, target, fields={"query": query, "draft": draft})


def self_instruct_example(rng: random.Random, language: Language) -> Example:
    """Chat: the self-instruct task as the user turn; the answer is the pre-filled list of example
    instructions (packaged seeds and generated ones) followed by new instructions, each after its
    label, so a continuation of the prefill stops at the next label."""
    subjects = LEXICONS[language].subjects
    seeds = packaged_seeds(language)
    count = rng.choice((2, 2, 2, 1, 3))
    examples = [rng.choice(seeds) if rng.random() < 0.4 else instruction(rng, language, rng.choice(subjects)) for _ in range(count)]
    task, prefill, _ = self_instruct_prompt(examples, language)
    new = [instruction(rng, language, rng.choice(subjects)) for _ in range(rng.randint(2, 3))]
    labelled = [render_prompt("self_instruct_item", language, index=count + 1 + i, text=text) for i, text in enumerate(new)]
    completion = prefill + "\n".join([new[0], *labelled[1:]])
    return Example("self_instruct", language, task, completion, fields={"examples": "\n".join(examples), "prefill": prefill})


def judge_example(rng: random.Random, language: Language) -> Example:
    lexicon = LEXICONS[language]
    subject = rng.choice(lexicon.subjects)
    yes, no = lexicon.judge_answers
    if rng.random() < JUDGE_NO_SHARE:
        question, answer = fill(rng.choice(lexicon.short_requests), rng, lexicon, subject), no
    else:
        question, answer = instruction(rng, language, subject), yes
    prompt = render_prompt("judge_suitability", language, min_words=rng.choice(JUDGE_MIN_WORDS), instruction=question)
    return Example("judge", language, prompt, answer, fields={"instruction": question})


def constraint(rng: random.Random, language: Language) -> str:
    """A length constraint in one of the wordings the length-control stage uses."""
    lexicon = LEXICONS[language]
    low, high = sorted(rng.sample(lexicon.numbers, 2), key=lexicon.numbers.index)
    return rng.choice(lexicon.constraints).format(n=rng.choice(lexicon.numbers), a=low, b=high)


def rewrite_example(rng: random.Random, language: Language) -> Example:
    lexicon = LEXICONS[language]
    query = instruction(rng, language, rng.choice(lexicon.subjects)) if rng.random() < 0.85 else rng.choice(packaged_seeds(language))
    wanted = constraint(rng, language)
    rewritten = rng.choice(lexicon.rewrites).format(query=query, query_open=query.rstrip(".。"), constraint=wanted)
    prompt = render_prompt("length_rewrite", language, constraint=wanted, query=query)
    return Example("rewrite", language, prompt, rewritten, fields={"query": query, "constraint": wanted})


BUILDERS = {
    "essay": essay_example,
    "extend": extend_example,
    "self_instruct": self_instruct_example,
    "judge": judge_example,
    "rewrite": rewrite_example,
}


def examples(seed: int) -> Iterator[Example]:
    """An endless deterministic stream of examples mixed by MIX and LANGUAGE_SHARE."""
    rng = random.Random(seed)
    kinds, kind_weights = zip(*MIX.items())
    languages, language_weights = zip(*LANGUAGE_SHARE.items())
    while True:
        kind = rng.choices(kinds, kind_weights)[0]
        language = rng.choices(languages, language_weights)[0]
        yield BUILDERS[kind](rng, language)
