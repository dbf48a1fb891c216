"""Make the bundled sample corpus offline with espeak-ng, word by word.

Each word is spoken by the espeak-ng voice of its language (Malay `ms`, English `en`, pinyin
`cmn-latn-pinyin`; particles in the Malay voice, slower), trimmed, and joined with short pauses,
so the true start and end of every word is known: they go into the manifest as `word_timings`
(ground truth for the aligner). Two speakers differ by voice variant, pitch and rate.

    .venv/bin/python data/make_sample_corpus.py   # writes data/sample/

Sentences are written with a language mark on words that differ from the sentence's language:
`word_e` English, `word_m` Malay, `word_z` pinyin, `word_p` particle.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import soundfile as sf

from preprocess import espeak

OUT = Path(__file__).resolve().parent / "sample"
ESPEAK_RATE_HZ = 22_050
GAP_S = 0.08
EDGE_S = 0.15

SPEAKERS = {
    "speaker_01": {
        "variant": "+f3", "pitch": 60, "speed": 150, "speaker_name": "Aina (synthetic, female)",
        "voice_characteristics": {"gender": "female", "accent": "kuala_lumpur", "speaking_rate": "medium"},
    },
    "speaker_02": {
        "variant": "+m3", "pitch": 35, "speed": 165, "speaker_name": "Hafiz (synthetic, male)",
        "voice_characteristics": {"gender": "male", "accent": "penang", "speaking_rate": "fast"},
    },
}
VOICES = {"ms": "ms", "en": "en", "zh": "cmn-latn-pinyin", "particle": "ms"}  # espeak-ng voice files
MARKS = {"e": "en", "m": "ms", "z": "zh", "p": "particle"}

# (category, sentence language, sentence). Phase 1: one language; 2: code-switched; 3: particles.
SENTENCES: list[tuple[str, str, str]] = [
    ("ms", "ms", "Selamat pagi, apa khabar?"),
    ("ms", "ms", "Saya hendak pergi ke kedai."),
    ("ms", "ms", "Boleh tolong saya tak?"),
    ("ms", "ms", "Cuaca hari ini sangat panas."),
    ("ms", "ms", "Kami makan nasi lemak setiap pagi."),
    ("ms", "ms", "Adik saya sedang belajar di sekolah."),
    ("ms", "ms", "Jalan ke rumah nenek sangat jauh."),
    ("ms", "ms", "Terima kasih banyak atas bantuan awak."),
    ("ms", "ms", "Bas itu sudah bertolak tadi."),
    ("ms", "ms", "Dia suka membaca buku cerita."),
    ("ms", "ms", "Pasar malam dibuka setiap hari Rabu."),
    ("ms", "ms", "Kita jumpa di stesen nanti."),
    ("ms", "ms", "Emak masak ayam goreng untuk makan malam."),
    ("ms", "ms", "Hujan turun dengan lebat semalam."),
    ("en", "en", "Good morning, how are you today?"),
    ("en", "en", "I want to go shopping this weekend."),
    ("en", "en", "Can you help me with this problem?"),
    ("en", "en", "The weather is very hot today."),
    ("en", "en", "Please send me the report tomorrow."),
    ("en", "en", "We are meeting at the office later."),
    ("en", "en", "My brother works in the city."),
    ("en", "en", "The train was late again this morning."),
    ("en", "en", "Thank you for coming to the party."),
    ("en", "en", "She bought a new phone yesterday."),
    ("en", "en", "The food here is really good."),
    ("en", "en", "Let us start the meeting now."),
    ("en", "en", "I will call you after lunch."),
    ("en", "en", "Where did you park the car?"),
    ("zh", "zh", "Ni hao, ni chi fan le ma?"),
    ("zh", "zh", "Wo men ming tian qu kai hui."),
    ("zh", "zh", "Xie xie ni de bang zhu."),
    ("zh", "zh", "Jin tian tian qi hen re."),
    ("cs", "en", "I want to pergi_m shopping."),
    ("cs", "ms", "Boleh you_e help_e me_e tak?"),
    ("cs", "ms", "Saya nak go_e to_e the_e kedai."),
    ("cs", "en", "Can you tolong_m ambil_m that book?"),
    ("cs", "ms", "Saya nak go_e shopping_e dengan my_e friends_e hari ini."),
    ("cs", "en", "This morning I pergi_m pasar_m untuk_m buy some sayur_m."),
    ("cs", "ms", "Jom kita go_e makan, I_e very_e hungry_e already_e."),
    ("cs", "en", "You dah_m makan_m or not yet?"),
    ("cs", "ms", "Nanti kita meet_e kat depan office_e."),
    ("cs", "en", "The meeting dah_m habis_m already."),
    ("cs", "ms", "Kereta saya rosak, so_e I_e took_e the_e train_e."),
    ("cs", "en", "Later we makan_m dekat_m mamak okay?"),
    ("cs", "ms", "Esok ada exam_e, I_e nervous_e gila."),
    ("cs", "en", "My boss cakap_m the_e report_e kena_m siap_m today_e."),
    ("cs", "ms", "Jom tapau_z makanan, nanti_m I_e bayar_m."),
    ("cs", "en", "Wo_z yao_z go to the pasar_m now."),
    ("cs", "ms", "Saya dah book_e table_e untuk malam ini."),
    ("cs", "en", "Can you bawa_m the laptop tomorrow?"),
    ("pa", "en", "Okay lah_p, I will go."),
    ("pa", "ms", "Sudah lah_p, don't_e worry_e about_e it_e."),
    ("pa", "en", "Can try leh_p, maybe it works."),
    ("pa", "ms", "Boleh leh_p?"),
    ("pa", "en", "Cannot help lor_p, I told you already."),
    ("pa", "en", "Really meh_p? Are you sure?"),
    ("pa", "en", "Of course I know mah_p!"),
    ("pa", "en", "Cannot lah_p, I busy leh_p."),
    ("pa", "en", "Why you like that one lah_p?"),
    ("pa", "en", "I told you already what_p."),
    ("pa", "en", "He so stingy one_p."),
    ("pa", "en", "Oh, the shop closed already loh_p."),
    ("pa", "en", "You sure or not hor_p?"),
    ("pa", "ms", "Jom pergi makan lah_p."),
    ("pa", "ms", "Mahal sangat lor_p, tak_m nak_m beli_m."),
    ("pa", "en", "So late already liao_p."),
    ("pa", "en", "Wah, this one very nice sia_p."),
    ("pa", "ms", "Kenapa awak tak datang ah_p?"),
    ("pa", "en", "Later you come also can wor_p."),
    ("pa", "ms", "Saya nak pergi shopping_e lah_p."),
]


def speak(word: str, lang: str, speaker: dict) -> np.ndarray:
    voice = VOICES[lang] + speaker["variant"]
    speed = speaker["speed"] - (35 if lang == "particle" else 0)
    pitch = speaker["pitch"] + (10 if lang == "particle" else 0)
    audio, rate = espeak.synthesize(word, voice, words_per_minute=speed, pitch=pitch)
    assert rate == ESPEAK_RATE_HZ, rate
    voiced = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[voiced[0] : voiced[-1] + 1] if voiced.size else audio


def words_of(sentence: str, sentence_lang: str) -> list[tuple[str, str, str]]:
    """(display token, spoken word, language) for each whitespace token."""
    out = []
    for token in sentence.split():
        match = re.fullmatch(r"(\W*)([\w']+?)(?:_([emzp]))?(\W*)", token)
        assert match, token
        lead, word, mark, trail = match.groups()
        lang = MARKS[mark] if mark else sentence_lang
        out.append((lead + word + trail, word, lang))
    return out


def main() -> None:
    if not espeak.available():
        raise SystemExit("espeak-ng is not available: run `make setup` (it installs espeakng-loader)")
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "audio").mkdir(parents=True)
    rng = np.random.default_rng(7)
    records = []
    counters: dict[str, int] = {}
    for index, (category, lang, sentence) in enumerate(SENTENCES):
        for speaker_id, speaker in SPEAKERS.items():
            # Each sentence once per speaker for phase 2/3; phase-1 sentences alternate speakers
            # to keep the corpus small.
            if category in ("ms", "en", "zh") and (index % 2) != (speaker_id == "speaker_02"):
                continue
            words = words_of(sentence, lang)
            pieces = [np.zeros(int(EDGE_S * ESPEAK_RATE_HZ), np.float32)]
            timings = []
            cursor = EDGE_S
            for display, word, word_lang in words:
                audio = speak(word, word_lang, speaker)
                start = cursor
                cursor += len(audio) / ESPEAK_RATE_HZ
                timings.append({"word": display.strip(",.?!"), "start": round(start, 4),
                                "end": round(cursor, 4), "lang": word_lang})
                gap = GAP_S + float(rng.uniform(0, 0.04))
                pieces += [audio, np.zeros(int(gap * ESPEAK_RATE_HZ), np.float32)]
                cursor += int(gap * ESPEAK_RATE_HZ) / ESPEAK_RATE_HZ
            pieces.append(np.zeros(int(EDGE_S * ESPEAK_RATE_HZ), np.float32))
            audio = np.concatenate(pieces)
            counters[category] = counters.get(category, 0) + 1
            n = counters[category]
            utt_id = f"{category}_{n:03d}_{speaker_id[-2:]}"
            # Mix formats and rates so preprocessing decodes and resamples for real.
            fmt, rate = [("flac", 22_050), ("flac", 22_050), ("wav", 16_000), ("ogg", 22_050),
                         ("flac", 22_050), ("mp3", 22_050)][n % 6]
            if rate != ESPEAK_RATE_HZ:
                import librosa

                audio = librosa.resample(audio, orig_sr=ESPEAK_RATE_HZ, target_sr=rate)
            rel = f"audio/{utt_id}.{fmt}"
            sf.write(OUT / rel, audio, rate, format=fmt.upper() if fmt != "ogg" else "OGG",
                     **({"subtype": "PCM_16"} if fmt == "wav" else {}))
            text = " ".join(display for display, _, _ in words)
            record = {
                "id": utt_id,
                "audio": rel,
                "text": text,
                "speaker_id": speaker_id,
                "speaker_name": speaker["speaker_name"],
                "voice_characteristics": speaker["voice_characteristics"],
                "duration": round(len(audio) / rate, 3),
                "word_timings": timings,
            }
            if category in ("ms", "en", "zh"):
                record["language"] = category
                record["accent"] = {"ms": "malaysian_malay", "en": "malaysian_english",
                                    "zh": "malaysian_mandarin"}[category]
            elif n % 3 == 0:
                # Some records carry the seed's explicit tags; the rest rely on the frontend.
                record["word_langs"] = [t["lang"] for t in timings]
                if category == "pa":
                    record["particle_tags"] = [t["word"].lower() if t["lang"] == "particle" else "none"
                                               for t in timings]
            records.append(record)
    with open(OUT / "manifest.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{len(records)} utterances, {size / 1e6:.1f} MB in {OUT}")


if __name__ == "__main__":
    main()
