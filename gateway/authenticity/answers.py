"""What 4040 answers, in Persian: one function per verdict, each at most 3 SMS parts.

The wording is the product: plain, short, telling the citizen what to do. Agency names
are the configured `name`s; dates Jalali (jalali.py), of the day the agency's message
was accepted, Tehran time.
"""

from gateway.authenticity.jalali import persian_date, persian_digits


def confirmed(agency_name, sent_at):
    """The text was sent to this citizen."""
    return (f"تأیید ۴۰۴۰: این پیامک را «{agency_name}» در تاریخ {persian_date(sent_at)} "
            "برای شما فرستاده است و معتبر است.")


def not_to_you(agency_name, sent_at):
    """The text was sent, but to someone else."""
    return (f"۴۰۴۰: این متن را «{agency_name}» در تاریخ {persian_date(sent_at)} فرستاده "
            "است، اما نه برای شما. پیام بازارسال‌شده، ابلاغی به شما نیست؛ "
            "پیام‌های خودتان را از همان دستگاه بگیرید.")


def not_sent(retention_days):
    """No agency sent this text to anyone (in the days the check looks back)."""
    days = persian_digits(int(retention_days))
    return (f"هشدار ۴۰۴۰: هیچ دستگاه دولتی این پیامک را در {days} روز گذشته نفرستاده "
            "است. روی پیوند آن نزنید، رمز و اطلاعات کارت وارد نکنید، پولی واریز نکنید و "
            "آن را به پلیس فتا گزارش دهید.")


def over_limit(per_hour):
    """The citizen checked more than `per_hour` texts within the hour (said once)."""
    return (f"۴۰۴۰: در هر ساعت {persian_digits(per_hour)} پیامک را می‌توانید بررسی کنید. "
            "لطفاً یک ساعت دیگر دوباره بفرستید.")


def how_to():
    """An empty text (or only spaces and punctuation) was sent."""
    return ("۴۰۴۰: متن پیامک مشکوک را کامل برای ۴۰۴۰ بفرستید تا بگوییم کدام دستگاه "
            "دولتی آن را برای شما فرستاده است.")


def incomplete():
    """Parts of the forwarded text never came (the intake released it partial)."""
    return ("۴۰۴۰: متن شما کامل نرسید (بخشی از پیامک بلند در راه ماند). لطفاً پیامک "
            "مشکوک را دوباره کامل برای ۴۰۴۰ بفرستید.")
