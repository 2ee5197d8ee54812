using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace Modular.Control.Stun;

/// <summary>
/// The slice of RFC 5389 a NAT-mapping probe needs: Binding Request parsing and Binding Success
/// Response with XOR-MAPPED-ADDRESS. Works on spans; nothing here allocates per packet.
/// </summary>
public static class StunMessage
{
    public const int HeaderSize = 20;
    public const int TransactionIdSize = 12;
    public const uint MagicCookie = 0x2112A442;
    public const ushort BindingRequest = 0x0001;
    public const ushort BindingSuccess = 0x0101;
    public const ushort XorMappedAddress = 0x0020;

    /// <summary>Largest response <see cref="WriteBindingSuccess"/> writes (IPv6 mapped address).</summary>
    public const int MaxResponseSize = HeaderSize + 4 + 20;

    /// <summary>
    /// True when <paramref name="packet"/> is a well-formed Binding Request: two zero top bits, the magic
    /// cookie, a length that is a multiple of 4 and matches the datagram, and attributes that fit.
    /// </summary>
    public static bool IsBindingRequest(ReadOnlySpan<byte> packet)
    {
        if (packet.Length < HeaderSize)
        {
            return false;
        }

        var type = BinaryPrimitives.ReadUInt16BigEndian(packet);
        var length = BinaryPrimitives.ReadUInt16BigEndian(packet[2..]);
        if (type != BindingRequest || (length & 3) != 0 || length != packet.Length - HeaderSize
            || BinaryPrimitives.ReadUInt32BigEndian(packet[4..]) != MagicCookie)
        {
            return false;
        }

        // Attributes must tile the body exactly (TLV, values padded to 4 bytes).
        var body = packet[HeaderSize..];
        while (body.Length > 0)
        {
            if (body.Length < 4)
            {
                return false;
            }

            var attributeLength = BinaryPrimitives.ReadUInt16BigEndian(body[2..]);
            var padded = 4 + ((attributeLength + 3) & ~3);
            if (padded > body.Length)
            {
                return false;
            }

            body = body[padded..];
        }

        return true;
    }

    /// <summary>Writes a Binding Request with <paramref name="transactionId"/>; returns its length.</summary>
    public static int WriteBindingRequest(Span<byte> destination, ReadOnlySpan<byte> transactionId)
    {
        BinaryPrimitives.WriteUInt16BigEndian(destination, BindingRequest);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], 0);
        BinaryPrimitives.WriteUInt32BigEndian(destination[4..], MagicCookie);
        transactionId[..TransactionIdSize].CopyTo(destination[8..]);
        return HeaderSize;
    }

    /// <summary>Writes the success response to <paramref name="request"/> telling <paramref name="mappedAddress"/>; returns its length.</summary>
    public static int WriteBindingSuccess(Span<byte> destination, ReadOnlySpan<byte> request, IPAddress mappedAddress, int mappedPort)
    {
        var address = mappedAddress.IsIPv4MappedToIPv6 ? mappedAddress.MapToIPv4() : mappedAddress;
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var written);
        return WriteBindingSuccess(destination, request, bytes[..written], mappedPort);
    }

    /// <summary>
    /// Writes the success response for a mapped address given as raw network-order bytes (4 for IPv4,
    /// 16 for IPv6; an IPv4-mapped IPv6 address is answered as IPv4). Allocation-free.
    /// </summary>
    public static int WriteBindingSuccess(Span<byte> destination, ReadOnlySpan<byte> request, ReadOnlySpan<byte> address, int mappedPort)
    {
        if (address.Length == 16 && address[..10].IndexOfAnyExcept((byte)0) < 0 && address[10] == 0xff && address[11] == 0xff)
        {
            address = address[12..];
        }

        var v6 = address.Length == 16;
        var addressLength = address.Length;
        var attributeLength = 4 + addressLength;

        BinaryPrimitives.WriteUInt16BigEndian(destination, BindingSuccess);
        BinaryPrimitives.WriteUInt16BigEndian(destination[2..], (ushort)(4 + attributeLength));
        request.Slice(4, 16).CopyTo(destination[4..]); // magic cookie + transaction id
        var attribute = destination[HeaderSize..];
        BinaryPrimitives.WriteUInt16BigEndian(attribute, XorMappedAddress);
        BinaryPrimitives.WriteUInt16BigEndian(attribute[2..], (ushort)attributeLength);
        attribute[4] = 0;
        attribute[5] = (byte)(v6 ? 2 : 1);
        BinaryPrimitives.WriteUInt16BigEndian(attribute[6..], (ushort)(mappedPort ^ (MagicCookie >> 16)));
        var xored = attribute.Slice(8, addressLength);
        address.CopyTo(xored);
        // XOR with cookie (and, for IPv6, the transaction id): the 16 bytes at offset 4 of the header.
        var mask = destination.Slice(4, 16);
        for (var i = 0; i < addressLength; i++)
        {
            xored[i] ^= mask[i];
        }

        return HeaderSize + 4 + attributeLength;
    }

    /// <summary>
    /// Reads the XOR-MAPPED-ADDRESS of a Binding Success Response that answers <paramref name="transactionId"/>.
    /// False for anything else (another transaction, malformed, no such attribute).
    /// </summary>
    public static bool TryReadBindingSuccess(ReadOnlySpan<byte> packet, ReadOnlySpan<byte> transactionId, out IPEndPoint? mapped)
    {
        mapped = null;
        if (packet.Length < HeaderSize
            || BinaryPrimitives.ReadUInt16BigEndian(packet) != BindingSuccess
            || BinaryPrimitives.ReadUInt32BigEndian(packet[4..]) != MagicCookie
            || !packet.Slice(8, TransactionIdSize).SequenceEqual(transactionId)
            || BinaryPrimitives.ReadUInt16BigEndian(packet[2..]) != packet.Length - HeaderSize)
        {
            return false;
        }

        var body = packet[HeaderSize..];
        while (body.Length >= 4)
        {
            var type = BinaryPrimitives.ReadUInt16BigEndian(body);
            var length = BinaryPrimitives.ReadUInt16BigEndian(body[2..]);
            if (4 + length > body.Length)
            {
                return false;
            }

            if (type == XorMappedAddress && length >= 8)
            {
                var family = body[5];
                var addressLength = family == 1 ? 4 : family == 2 ? 16 : 0;
                if (addressLength == 0 || length < 4 + addressLength)
                {
                    return false;
                }

                var port = BinaryPrimitives.ReadUInt16BigEndian(body[6..]) ^ (int)(MagicCookie >> 16);
                Span<byte> address = stackalloc byte[addressLength];
                var mask = packet.Slice(4, 16);
                for (var i = 0; i < addressLength; i++)
                {
                    address[i] = (byte)(body[8 + i] ^ mask[i]);
                }

                mapped = new IPEndPoint(new IPAddress(address), port);
                return true;
            }

            body = body[Math.Min(body.Length, 4 + ((length + 3) & ~3))..];
        }

        return false;
    }
}
