using System.Globalization;
using System.Net;
using System.Net.Sockets;

namespace Modular.Server.Networks;

/// <summary>Checks administrator input before anything is stored. Every refusal names the field at fault.</summary>
public static class PolicyValidator
{
    /// <summary>More ports than this in one rule is refused: it would be one rule in name only.</summary>
    public const int MaxPortsPerRule = 10_000;

    public const int MaxNameLength = 64;

    public static ValidatedPolicy Validate(NewPolicy policy)
    {
        ArgumentNullException.ThrowIfNull(policy);
        var name = ValidateName("name", policy.Name);
        if (string.IsNullOrWhiteSpace(policy.Source))
        {
            throw new NetworkValidationException("source", "a source group is required");
        }

        var hasGroup = !string.IsNullOrWhiteSpace(policy.Destination);
        var hasResource = !string.IsNullOrWhiteSpace(policy.DestinationResource);
        if (hasGroup == hasResource)
        {
            throw new NetworkValidationException("destination", "give exactly one of a destination group or a destination network resource");
        }

        var protocol = ParseProtocol(policy.Protocol);
        var ports = ParsePorts(policy.Ports);
        if (protocol == PolicyProtocol.Icmp && ports.Count > 0)
        {
            throw new NetworkValidationException("ports", "icmp has no ports");
        }

        var action = policy.Action?.Trim().ToLowerInvariant() switch
        {
            "accept" or "" or null => PolicyAction.Accept,
            "drop" => PolicyAction.Drop,
            var other => throw new NetworkValidationException("action", $"expected accept or drop, got '{other}'"),
        };

        return new ValidatedPolicy(name, policy.Source.Trim(), hasGroup ? policy.Destination!.Trim() : null, hasResource ? policy.DestinationResource!.Trim() : null, protocol, ports, action, policy.Bidirectional);
    }

    public static string ValidateName(string field, string? name)
    {
        var trimmed = name?.Trim() ?? "";
        if (trimmed.Length == 0)
        {
            throw new NetworkValidationException(field, "must not be empty");
        }

        if (trimmed.Length > MaxNameLength || trimmed.Any(c => char.IsControl(c)))
        {
            throw new NetworkValidationException(field, $"at most {MaxNameLength} printable characters");
        }

        return trimmed;
    }

    public static PolicyProtocol ParseProtocol(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        "all" or "" or null => PolicyProtocol.All,
        "tcp" => PolicyProtocol.Tcp,
        "udp" => PolicyProtocol.Udp,
        "icmp" => PolicyProtocol.Icmp,
        var other => throw new NetworkValidationException("protocol", $"expected tcp, udp, icmp or all, got '{other}'"),
    };

    /// <summary>"80,443,8000-8100" into sorted, merged ranges; empty means every port.</summary>
    public static IReadOnlyList<PortSpan> ParsePorts(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return [];
        }

        var spans = new List<PortSpan>();
        foreach (var raw in text.Split(','))
        {
            var item = raw.Trim();
            if (item.Length == 0)
            {
                throw new NetworkValidationException("ports", $"empty item in '{text}'");
            }

            var dash = item.IndexOf('-', StringComparison.Ordinal);
            var start = ParsePort(dash < 0 ? item : item[..dash]);
            var end = dash < 0 ? start : ParsePort(item[(dash + 1)..]);
            if (end < start)
            {
                throw new NetworkValidationException("ports", $"range {item} is reversed");
            }

            spans.Add(new PortSpan(start, end));
        }

        spans.Sort((a, b) => a.Start.CompareTo(b.Start));
        var merged = new List<PortSpan>();
        foreach (var span in spans)
        {
            if (merged.Count > 0 && span.Start <= merged[^1].End + 1)
            {
                merged[^1] = merged[^1] with { End = Math.Max(merged[^1].End, span.End) };
            }
            else
            {
                merged.Add(span);
            }
        }

        var total = merged.Sum(s => s.Count);
        if (total > MaxPortsPerRule)
        {
            throw new NetworkValidationException("ports", $"{total} ports in one rule; at most {MaxPortsPerRule}");
        }

        return merged;
    }

    /// <summary>A subnet in CIDR form or a single address, normalised (host bits cleared).</summary>
    public static string ParseNetwork(string field, string? text)
    {
        var value = text?.Trim() ?? "";
        var slash = value.IndexOf('/', StringComparison.Ordinal);
        if (!IPAddress.TryParse(slash < 0 ? value : value[..slash], out var address))
        {
            throw new NetworkValidationException(field, $"expected an address or subnet such as 10.0.0.0/24, got '{value}'");
        }

        var max = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        var length = max;
        if (slash >= 0 && (!int.TryParse(value.AsSpan(slash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out length) || length > max))
        {
            throw new NetworkValidationException(field, $"prefix length must be 0-{max}, got '{value[(slash + 1)..]}'");
        }

        var bytes = address.GetAddressBytes();
        for (var bit = length; bit < max; bit++)
        {
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        }

        return $"{new IPAddress(bytes)}/{length}";
    }

    private static int ParsePort(string text)
    {
        if (!int.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out var port))
        {
            throw new NetworkValidationException("ports", $"'{text}' is not a port number");
        }

        if (port is < 1 or > 65535)
        {
            throw new NetworkValidationException("ports", $"port {port} is outside 1-65535");
        }

        return port;
    }
}
