using System.Net;

namespace Modular.Server.Networks;

/// <summary>Checks nameserver groups field by field; the exception names the field as the CLI spells it.</summary>
public static class DnsValidator
{
    /// <summary>A group ready to store: name trimmed, nameservers as "ip:port", domains lowercase without a trailing dot, no duplicates.</summary>
    public static NewNameserverGroup Validate(NewNameserverGroup group)
    {
        ArgumentNullException.ThrowIfNull(group);
        var name = PolicyValidator.ValidateName("name", group.Name);
        if (group.Nameservers.Count == 0)
        {
            throw new NetworkValidationException("nameserver", "at least one nameserver is required");
        }

        var nameservers = new List<string>();
        foreach (var text in group.Nameservers)
        {
            var normalized = ParseNameserver(text);
            if (!nameservers.Contains(normalized))
            {
                nameservers.Add(normalized);
            }
        }

        var domains = new List<string>();
        foreach (var text in group.Domains)
        {
            var domain = ValidateDomain(text);
            if (!domains.Contains(domain))
            {
                domains.Add(domain);
            }
        }

        return new NewNameserverGroup(name, nameservers, domains);
    }

    /// <summary>"ip", "ip:port" or "[ipv6]:port" (port 53 when omitted) as "ip:port".</summary>
    public static string ParseNameserver(string? text)
    {
        var trimmed = text?.Trim() ?? "";
        var bracketed = trimmed.StartsWith('[');
        if (bracketed && trimmed.EndsWith(']'))
        {
            trimmed = trimmed[1..^1];
            bracketed = false;
        }

        if (!bracketed && TryParseAddress(trimmed, out var bare) && (bare.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 || !trimmed.Contains(':', StringComparison.Ordinal)))
        {
            return RefuseMeshResolver(new IPEndPoint(bare, 53), text);
        }

        var colon = trimmed.LastIndexOf(':');
        var host = colon > 0 ? trimmed[..colon] : "";
        if (colon > 0 && (bracketed ? host.EndsWith(']') : !host.Contains(':', StringComparison.Ordinal))
            && TryParseAddress(bracketed ? host[1..^1] : host, out var address))
        {
            if (!int.TryParse(trimmed.AsSpan(colon + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var port) || port is < 1 or > 65535)
            {
                throw new NetworkValidationException("nameserver", $"'{text?.Trim()}': the port must be a number from 1 to 65535");
            }

            return RefuseMeshResolver(new IPEndPoint(address, port), text);
        }

        throw new NetworkValidationException("nameserver", $"'{text?.Trim()}' is not an IP address (ip, ip:port or [ipv6]:port)");
    }

    /// <summary>
    /// Port 53 on an overlay address is always some agent's own mesh resolver: forwarding to it would send
    /// the name round the mesh (each agent forwarding to the next) until timeouts end it.
    /// </summary>
    private static string RefuseMeshResolver(IPEndPoint endpoint, string? text)
    {
        if (endpoint.Port == 53 && endpoint.Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork)
        {
            var ip = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(endpoint.Address.GetAddressBytes());
            if ((ip & 0xFFC00000) == Store.OverlayNetwork.Network)
            {
                throw new NetworkValidationException("nameserver", $"'{text?.Trim()}' is a mesh peer's own resolver (port 53 on the overlay); forwarding there would loop — use another port or an address outside {Store.OverlayNetwork.ToAddress(Store.OverlayNetwork.Network)}/{Store.OverlayNetwork.PrefixLength}");
            }
        }

        return endpoint.ToString();
    }

    /// <summary>An address written out in full: IPv6, or IPv4 as four dotted numbers (not inet_aton's "10.1" shorthands).</summary>
    private static bool TryParseAddress(string text, out IPAddress address)
        => IPAddress.TryParse(text, out address!)
           && (address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 || text.Count(c => c == '.') == 3);

    /// <summary>A DNS name: labels of 1-63 letters, digits, '-' (not at either end) or '_', 253 characters at most.</summary>
    public static string ValidateDomain(string? text)
    {
        var domain = (text?.Trim() ?? "").TrimEnd('.').ToLowerInvariant();
        if (domain.Length == 0)
        {
            throw new NetworkValidationException("domain", "must not be empty (leave --domain out for the default group)");
        }

        if (domain.Length > 253)
        {
            throw new NetworkValidationException("domain", $"'{domain}' is longer than 253 characters");
        }

        foreach (var label in domain.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-'
                || !label.All(c => c is (>= 'a' and <= 'z') or (>= '0' and <= '9') or '-' or '_'))
            {
                throw new NetworkValidationException("domain", $"'{domain}' is not a valid domain name (label '{label}')");
            }
        }

        return domain;
    }

    /// <summary>Refuses a domain that is the mesh zone or inside it: the agents answer those names themselves.</summary>
    public static void RefuseZoneDomains(NewNameserverGroup group, string zone)
    {
        ArgumentNullException.ThrowIfNull(group);
        var z = (zone ?? "").Trim().TrimEnd('.').ToLowerInvariant();
        foreach (var domain in group.Domains)
        {
            if (z.Length > 0 && (domain == z || domain.EndsWith("." + z, StringComparison.Ordinal)))
            {
                throw new NetworkValidationException("domain", $"'{domain}' is inside the mesh zone {z}, which the agents answer themselves");
            }
        }
    }
}
