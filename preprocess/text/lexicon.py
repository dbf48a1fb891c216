"""Word lists the first frontend looks words up in.

Small, hand-kept lists of frequent words; enough for the sample corpus and everyday sentences.
"""

from __future__ import annotations

import itertools

PARTICLE_VARIANTS: dict[str, str] = {
    **dict.fromkeys(["lah", "la", "laa", "lahh", "lahhh", "laaa"], "lah"),
    **dict.fromkeys(["leh", "lehh"], "leh"),
    **dict.fromkeys(["lor", "lorh", "lorr", "lo"], "lor"),
    **dict.fromkeys(["loh", "lohh"], "loh"),
    **dict.fromkeys(["meh", "mehh"], "meh"),
    **dict.fromkeys(["mah", "mahh"], "mah"),
    **dict.fromkeys(["hor", "horr"], "hor"),
    **dict.fromkeys(["ah", "ahh"], "ah"),
    **dict.fromkeys(["wor", "wo", "woh"], "wor"),
    **dict.fromkeys(["liao", "liaw"], "liao"),
    "one": "one",
    **dict.fromkeys(["what", "wat"], "what"),
    **dict.fromkeys(["sia", "siah"], "sia"),
}

MALAY_WORDS: frozenset[str] = frozenset("""
saya aku awak kamu engkau dia kami kita mereka anda beliau nak hendak mahu tak tidak bukan dah sudah
belum pernah akan sedang masih je saja sahaja kot pun kat di ke dari daripada pada dengan untuk bagi
gi pergi balik datang pulang ni ini tu itu sini situ sana lepas macam mana apa siapa bila kenapa
mengapa berapa bagaimana yang dan atau tetapi tapi sebab kerana jika kalau supaya agar juga lagi sangat
amat terlalu paling lebih kurang semua setiap ada tiada boleh dapat mesti perlu kena jom mari tolong
terima kasih selamat pagi petang malam tengah hari esok semalam kelmarin lusa nanti tadi sekarang
makan minum tidur bangun jalan lari duduk berdiri baca tulis cakap dengar tengok lihat beli jual bayar
ambil bawa beri kasi buat masak cuci basuh main kerja belajar mengajar tunggu cari jumpa tanya jawab
rumah kedai pasar sekolah pejabat kereta bas teksi jalan bandar kampung negeri air nasi lemak ayam ikan
daging sayur buah roti teh kopi gula garam pedas manis masin sedap panas sejuk hujan cuaca lebat angin
besar kecil panjang pendek tinggi rendah baru lama cantik hodoh baik jahat pandai bodoh mahal murah
jauh dekat cepat lambat penat lapar dahaga sakit sihat gembira sedih marah takut malu rindu sayang
emak mak ayah bapa abang kakak adik nenek datuk atuk anak orang budak kawan cikgu doktor bos
buku cerita surat duit wang ringgit sen harga barang baju kasut beg telefon
satu dua tiga empat lima enam tujuh lapan sembilan sepuluh puluh ratus ribu juta
hari minggu bulan tahun jam minit saat pukul awal lewat khabar bertolak membaca dibuka rabu isnin selasa
khamis jumaat sabtu ahad stesen rosak habis siap gila dekat depan belakang atas bawah luar dalam
tepi mamak makanan minuman kenduri raya bersama sama-sama tahu faham ingat lupa rasa fikir suka benci
mau tau tahu goreng rebus bakar dekat sikit banyak ramai sedikit hampir pun lah kah tah nya sangat betul
salah senang susah
""".split())

ENGLISH_WORDS: frozenset[str] = frozenset("""
i you he she it we they me him her us them my your his its our their mine yours this that these those
a an the and or but so if because when where why how what which who whom whose to of in on at for
with from by about into over after before under between through during without again already also
still just only very really too not no yes okay ok please thank thanks sorry hello hi good morning
afternoon evening night today tomorrow yesterday later now soon here there is am are was were be been
being have has had do does did done will would can could shall should may might must cannot can't
don't doesn't didn't won't isn't aren't wasn't let go going went gone come came get got give gave
take took make made see saw look know knew think thought want need like love help try tell told say
said call send bring buy bought pay eat drink sleep work study meet start stop wait work works sure
new old big small hot cold nice good bad busy late early hungry tired happy sad nervous free
one two three four five six seven eight nine ten hundred thousand first last next some any all many
much more most few little lot lots every each other another same different
weekend week month year time day hour minute shopping shop mall office city car train bus phone
food party meeting report problem question book table laptop exam boss friend friends brother sister
mother father family people man woman child house home school room door money price weather lunch
dinner breakfast coffee tea water course of oh wah yet park later okay also maybe it works worry
closed sure really
""".split())

# Chinese-dialect words common in Malaysian speech, written in the Latin alphabet.
ZH_LOANS: frozenset[str] = frozenset("""
tapau kiasu cincai paiseh angpau ang pau kopitiam lepak yumcha yum cha sui leng
""".split())

_INITIALS = ["", "b", "p", "m", "f", "d", "t", "n", "l", "g", "k", "h", "j", "q", "x", "zh", "ch", "sh",
             "r", "z", "c", "s", "y", "w"]
_FINALS = ["a", "o", "e", "i", "u", "ai", "ei", "ao", "ou", "an", "en", "ang", "eng", "ong", "er", "ia",
           "ie", "iao", "iu", "ian", "in", "iang", "ing", "iong", "ua", "uo", "uai", "ui", "uan", "un",
           "uang", "ve", "ue"]
# Over-generates a little (a few impossible initial+final pairs); harmless for a lookup set.
PINYIN_SYLLABLES: frozenset[str] = frozenset(
    i + f for i, f in itertools.product(_INITIALS, _FINALS) if i + f
) - frozenset({"i", "u"})
