using System.Globalization;

namespace Modular.Server.Config;

/// <summary>Durations as people write them: 90s, 15m, 24h, 7d (one or more number+unit pairs, e.g. 1h30m).</summary>
public static class DurationParser
{
    public static bool TryParse(string text, out TimeSpan duration)
    {
        duration = TimeSpan.Zero;
        text = text.Trim();
        if (text == "0")
        {
            return true;
        }

        var i = 0;
        var any = false;
        while (i < text.Length)
        {
            var start = i;
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                i++;
            }

            if (i == start || i == text.Length
                || !long.TryParse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            {
                return false;
            }

            var unit = text[i++] switch
            {
                's' => TimeSpan.FromSeconds(1),
                'm' => TimeSpan.FromMinutes(1),
                'h' => TimeSpan.FromHours(1),
                'd' => TimeSpan.FromDays(1),
                _ => (TimeSpan?)null,
            };
            if (unit is null || value > 100_000_000)
            {
                return false;
            }

            duration += unit.Value * value;
            any = true;
        }

        return any;
    }
}
