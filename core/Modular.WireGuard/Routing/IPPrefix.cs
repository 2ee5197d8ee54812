using System.Net;
using System.Net.Sockets;

namespace Modular.WireGuard.Routing;

/// <summary>Parses "address/length" the way `wg` accepts it: host bits are allowed and cleared.</summary>
public static class IPPrefix
{
    public static bool TryParse(string? text, out IPNetwork prefix)
    {
        prefix = default;
        if (string.IsNullOrWhiteSpace(text))
        {
            return false;
        }

        text = text.Trim();
        var slash = text.IndexOf('/', StringComparison.Ordinal);
        var addressText = slash < 0 ? text : text[..slash];
        if (!IPAddress.TryParse(addressText, out var address) || addressText.Contains('%', StringComparison.Ordinal))
        {
            return false;
        }

        var maxLength = address.AddressFamily == AddressFamily.InterNetwork ? 32 : 128;
        var length = maxLength;
        if (slash >= 0 && (!int.TryParse(text.AsSpan(slash + 1), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out length) || length > maxLength))
        {
            return false;
        }

        prefix = Canonical(address, length);
        return true;
    }

    /// <summary>The prefix with host bits cleared.</summary>
    public static IPNetwork Canonical(IPAddress address, int length)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var written);
        bytes = bytes[..written];
        for (var bit = length; bit < written * 8; bit++)
        {
            bytes[bit / 8] &= (byte)~(0x80 >> (bit % 8));
        }

        return new IPNetwork(new IPAddress(bytes), length);
    }
}
