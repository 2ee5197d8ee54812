using System.Globalization;
using System.Net;

namespace Modular.Plugins.Netflow;

/// <summary>
/// The netflow plugin's settings, from its <c>[plugins.netflow]</c> section. The host adds
/// <c>ipfix_collector</c> from the agent's <c>[netflow] ipfix_collector</c>.
/// </summary>
/// <param name="Capacity">Events kept while the server has not acknowledged them.</param>
/// <param name="IpfixCollector">Where IPFIX goes ("host:port"), or null for no export.</param>
/// <param name="TemplateRefresh">How often the IPFIX templates are sent again (besides at start).</param>
internal sealed record NetflowSettings(int Capacity, string? IpfixCollector, TimeSpan TemplateRefresh)
{
    public const int DefaultCapacity = 10_000;

    public static readonly TimeSpan DefaultTemplateRefresh = TimeSpan.FromMinutes(10);

    private static readonly string[] KnownKeys = ["capacity", "ipfix_collector", "template_refresh"];

    /// <summary>Reads the settings; a bad or unknown value throws <see cref="ArgumentException"/> naming the key.</summary>
    public static NetflowSettings Parse(IReadOnlyDictionary<string, object?> settings)
    {
        foreach (var key in settings.Keys)
        {
            if (!KnownKeys.Contains(key, StringComparer.Ordinal))
            {
                throw new ArgumentException($"netflow: unknown setting \"{key}\" (known: {string.Join(", ", KnownKeys)})");
            }
        }

        var capacity = DefaultCapacity;
        if (settings.TryGetValue("capacity", out var value))
        {
            capacity = value is long n && n is > 0 and <= 10_000_000
                ? (int)n
                : throw new ArgumentException($"netflow: capacity must be an integer between 1 and 10000000, got {value ?? "nothing"}");
        }

        string? collector = null;
        if (settings.TryGetValue("ipfix_collector", out value) && value is not "")
        {
            collector = value is string text && ParseHostPort(text) is not null
                ? text
                : throw new ArgumentException($"netflow: ipfix_collector must be \"host:port\" with a port between 1 and 65535, got \"{value}\"");
        }

        var refresh = DefaultTemplateRefresh;
        if (settings.TryGetValue("template_refresh", out value))
        {
            refresh = value is string text && ParseDuration(text) is { } parsed && parsed >= TimeSpan.FromSeconds(1) && parsed <= TimeSpan.FromDays(1)
                ? parsed
                : throw new ArgumentException($"netflow: template_refresh must be a duration between 1s and 24h (\"30s\", \"10m\", \"1h\"), got \"{value}\"");
        }

        return new NetflowSettings(capacity, collector, refresh);
    }

    /// <summary>"host:port", "1.2.3.4:port" or "[v6]:port" as (host, port); null when it is not one.</summary>
    public static (string Host, int Port)? ParseHostPort(string value)
    {
        var colon = value.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(value.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
        {
            return null;
        }

        var host = value[..colon];
        if (host.StartsWith('['))
        {
            return host.EndsWith(']') && IPAddress.TryParse(host[1..^1], out var v6) && v6.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
                ? (host[1..^1], port)
                : null;
        }

        return host.Contains(':', StringComparison.Ordinal) || host.Any(char.IsWhiteSpace) ? null : (host, port);
    }

    /// <summary>"90s", "10m", "1h30m": whole numbers with h, m or s; null when it is not one.</summary>
    public static TimeSpan? ParseDuration(string text)
    {
        var total = TimeSpan.Zero;
        var i = 0;
        if (text.Length == 0)
        {
            return null;
        }

        while (i < text.Length)
        {
            var start = i;
            while (i < text.Length && char.IsAsciiDigit(text[i]))
            {
                i++;
            }

            if (i == start || i == text.Length || !long.TryParse(text.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n > 1_000_000)
            {
                return null;
            }

            TimeSpan? part = text[i++] switch
            {
                'h' => TimeSpan.FromHours(n),
                'm' => TimeSpan.FromMinutes(n),
                's' => TimeSpan.FromSeconds(n),
                _ => null,
            };
            if (part is null)
            {
                return null;
            }

            total += part.Value;
        }

        return total;
    }
}
