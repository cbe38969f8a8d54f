"""Knowledge retrieval (bots.knowledge): relevant pieces, only from the bot's own knowledge."""
from bots.knowledge import chunks, retrieve, tokens


def config_with(*items):
    return {"knowledge": [dict(id=i, **item) for i, item in enumerate(items, 1)]}


def test_it_ranks_the_matching_faq_first():
    config = config_with(
        {"kind": "faq", "title": "Do you deliver?", "body": "Yes, within 10 km."},
        {"kind": "faq", "title": "What are your opening hours?", "body": "We are open Monday to Friday, 9am to 6pm."},
    )
    assert retrieve(config, "when are your opening hours")[0]["title"] == "What are your opening hours?"


def test_it_returns_nothing_when_nothing_matches():
    config = config_with({"kind": "faq", "title": "Do you deliver?", "body": "Yes."})
    assert retrieve(config, "quantum chromodynamics") == []
    assert retrieve(config, "") == []


def test_it_finds_knowledge_written_in_any_script():
    """Words were [a-z0-9]+: a question in Russian or Japanese had no words, and retrieved nothing."""
    config = config_with(
        {"kind": "faq", "title": "Do you deliver?", "body": "Yes, within 10 km."},
        {"kind": "faq", "title": "Какие у вас часы работы?", "body": "С 9 до 18, без выходных."},
        {"kind": "faq", "title": "営業時間は何時ですか？", "body": "毎日9時から18時までです。"},
        {"kind": "faq", "title": "Πού βρίσκεται το κατάστημα;", "body": "Στην Αθήνα."},
    )
    assert retrieve(config, "Какие часы работы в субботу?")[0]["title"] == "Какие у вас часы работы?"
    assert retrieve(config, "営業時間を教えてください")[0]["title"] == "営業時間は何時ですか？"  # no spaces between words
    assert retrieve(config, "ΠΟΥ ΒΡΙΣΚΕΤΑΙ ΤΟ ΚΑΤΑΣΤΗΜΑ")[0]["title"] == "Πού βρίσκεται το κατάστημα;"  # any case, no accents


def test_a_question_typed_without_accents_finds_the_words_written_with_them():
    """"envíos" was two words, "env" and "os"; "envio" matched neither."""
    config = config_with(
        {"kind": "faq", "title": "¿Cuánto cuesta el envío?", "body": "Gratis desde 50 €."},
        {"kind": "faq", "title": "¿Cuánto cuesta una bici?", "body": "Desde 500 €."},
    )
    assert [piece["title"] for piece in retrieve(config, "precio del envio")] == ["¿Cuánto cuesta el envío?"]


def test_indic_words_keep_their_vowel_signs():
    """Python's \\w leaves combining marks out, so words were cut at each vowel sign: "दुकान कब खुलती
    है" was "द क न कब ख लत ह", letters any Hindi sentence shares, and a question about a book's
    price retrieved the shop's opening hours."""
    assert tokens("दुकान कब खुलती है?") == ["दुकान", "कब", "खुलती", "है"]
    assert tokens("দোকান কখন খোলে") == ["দোকান", "কখন", "খোলে"]  # Bengali
    assert tokens("கடை எப்போது திறக்கும்") == ["கடை", "எப்போது", "திறக்கும்"]  # Tamil
    assert tokens("\u0958ीमत") == tokens("\u0915\u093cीमत") == ["\u0915\u093cीमत"]  # क़ precomposed or not
    config = config_with(
        {"kind": "faq", "title": "दुकान कब खुलती है?", "body": "रोज़ सुबह 9 बजे से। HOURS-7"},
        {"kind": "faq", "title": "क्या आप घर पर डिलीवरी करते हैं?", "body": "हाँ, 10 किमी तक।"},
    )
    assert retrieve(config, "दुकान कब खुलती है")[0]["text"].endswith("HOURS-7")
    assert retrieve(config, "किताब की कीमत बताइए") == []  # no word in common, only vowel-sign fragments


def test_vowel_points_and_joiners_that_a_question_may_leave_out_are_folded():
    """Hebrew is mostly written without its vowel points, and ZWNJ/ZWJ only change how letters
    join: both were word breaks, so pointed knowledge matched an unpointed question by single letters."""
    assert tokens("שָׁלוֹם") == tokens("שלום") == ["שלום"]
    assert tokens("می\u200cخواهم") == ["میخواهم"]  # Persian, with a ZWNJ
    assert tokens("क्\u200dषमा") == tokens("क्षमा") == ["क्षमा"]  # a Hindi half-form asked for with a ZWJ


def test_thai_written_without_spaces_is_matched_in_pieces_of_two_letters():
    """Thai runs were cut at their vowel and tone marks into pieces of any length ("ร้านเปิดกี่โมงครับ":
    ร, านเป, ดก, โมงคร, บ), which matched by chance: what time the shop opens found the refund policy,
    what time it closes nothing. Now, like Japanese, overlapping pieces of two letters with their marks."""
    assert tokens("เปิด") == ["เปิ", "ปิด"]
    config = config_with(
        {"kind": "faq", "title": "นโยบายการคืนเงิน", "body": "ขอคืนเงินได้ภายในสิบสี่วันหลังจากได้รับสินค้า"},
        {"kind": "faq", "title": "ค่าจัดส่ง", "body": "ห้าสิบบาททั่วประเทศ ส่งฟรีเมื่อซื้อครบห้าร้อยบาท"},
        {"kind": "faq", "title": "เวลาทำการ", "body": "เปิดจันทร์ถึงศุกร์ แปดโมงเช้าถึงห้าโมงเย็น"},
    )
    assert retrieve(config, "ร้านเปิดกี่โมงครับ")[0]["title"] == "เวลาทำการ"
    assert retrieve(config, "ปิดร้านกี่โมง")[0]["title"] == "เวลาทำการ"
    assert retrieve(config, "ค่าส่งเท่าไร")[0]["title"] == "ค่าจัดส่ง"
    assert retrieve(config, "ขอคืนเงินได้ไหม")[0]["title"] == "นโยบายการคืนเงิน"


def test_it_splits_documents_by_paragraph():
    body = "\n\n".join(f"Paragraph {i} " + "word " * 60 for i in range(5))
    pieces = chunks(config_with({"kind": "doc", "title": "Manual", "body": body}))
    assert len(pieces) > 1
    assert all(len(p["text"]) <= 700 for p in pieces)


def test_a_document_without_blank_lines_is_still_cut_into_pieces_a_prompt_can_hold():
    """Before: one piece of 225,000 characters, put whole into the prompt, past the model's context."""
    from bots.knowledge import CHUNK_CHARS

    lines = [f"Line {i}: frames are covered for {i % 7 + 1} years." for i in range(3000)]
    lines[1234] = "Batteries are covered for two years, and the warranty transfers to a new owner."
    config = config_with({"kind": "doc", "title": "Policy", "body": "\n".join(lines)},
                         {"kind": "doc", "title": "Terms", "body": "All sales final. " * 500 + "x" * 2000},
                         {"kind": "faq", "title": "Returns?", "body": "Within 30 days. " * 200})
    pieces = chunks(config)
    assert all(len(p["text"]) <= CHUNK_CHARS + len("Q: Returns?\nA: ") for p in pieces)
    assert "".join(p["text"] for p in pieces if p["title"] == "Policy").count("Line ") == 2999  # nothing lost
    assert all(p["text"].startswith("Q: Returns?\nA: ") for p in pieces if p["title"] == "Returns?")
    best = retrieve(config, "does the battery warranty transfer to a new owner?")
    assert "warranty transfers to a new owner" in best[0]["text"] and sum(len(p["text"]) for p in best) < 3 * CHUNK_CHARS + 100


def test_it_retrieves_only_from_the_bot_it_is_given(acme_bot, globex_bot):
    # Each bot's config carries its own knowledge; Globex's secret is never a candidate for Acme.
    hits = retrieve(acme_bot.live_config(), "Do you take new patients?")
    assert all("Globex" not in piece["text"] for piece in hits)
    assert retrieve(globex_bot.live_config(), "Do you take new patients?")[0]["text"].endswith("yes, on Tuesdays.")
